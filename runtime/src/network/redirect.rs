//! tc between an interface and its tap: an ingress qdisc on each, and on each a u32 filter
//! matching every frame whose action (mirred, egress redirect) sends it out of the other.
//! Frames never reach the namespace's IP stack; the guest is the only host behind the
//! veth.

use std::path::Path;

use futures_util::stream::TryStreamExt;
use netlink_packet_route::tc::TcHandle;
use rtnetlink::Handle;

use super::netns::failed;
use super::{Interface, NetworkError};

/// `protocol all`: ETH_P_ALL as the kernel reads it, in network byte order.
const PROTOCOL_ALL: u16 = (libc::ETH_P_ALL as u16).to_be();
/// The ingress qdisc's handle, `ffff:`.
const INGRESS_PARENT: u32 = 0xffff_0000;

async fn index_of(handle: &Handle, path: &Path, name: &str) -> Result<u32, NetworkError> {
    let link = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(failed(path, format!("finding {name}")))?;
    link.map(|l| l.header.index)
        .ok_or_else(|| NetworkError::Netlink {
            path: path.to_path_buf(),
            what: format!("finding {name}"),
            message: "no such interface".into(),
        })
}

async fn delete_ingress(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    let mut request = handle.qdisc().del(index as i32);
    request.message_mut().header.parent = TcHandle::INGRESS;
    request.message_mut().header.handle = TcHandle::from(INGRESS_PARENT);
    request.execute().await
}

/// Brings `tap` up with `interface`'s MTU and redirects each one's ingress to the other.
pub async fn connect(
    handle: &Handle,
    path: &Path,
    interface: &Interface,
    tap: &str,
) -> Result<(), NetworkError> {
    let tap_index = index_of(handle, path, tap).await?;
    handle
        .link()
        .set(
            rtnetlink::LinkUnspec::new_with_index(tap_index)
                .mtu(interface.mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(failed(path, format!("bringing {tap} up")))?;
    // A sandbox that crashed in this namespace may have left its qdisc behind.
    let _ = delete_ingress(handle, interface.index).await;
    for (from, from_name, to) in [
        (interface.index, interface.name.as_str(), tap_index),
        (tap_index, tap, interface.index),
    ] {
        handle
            .qdisc()
            .add(from as i32)
            .ingress()
            .execute()
            .await
            .map_err(failed(
                path,
                format!("adding the ingress qdisc of {from_name}"),
            ))?;
        handle
            .traffic_filter(from as i32)
            .add()
            .parent(INGRESS_PARENT)
            .protocol(PROTOCOL_ALL)
            .redirect(to)
            .map_err(failed(path, format!("building the filter of {from_name}")))?
            .execute()
            .await
            .map_err(failed(
                path,
                format!("adding the redirect filter of {from_name}"),
            ))?;
    }
    Ok(())
}

/// Removes the ingress qdisc (and with it the filter) of interface `name`, if it is
/// still there.
pub async fn disconnect(handle: &Handle, path: &Path, name: &str) -> Result<(), NetworkError> {
    let Ok(index) = index_of(handle, path, name).await else {
        return Ok(());
    };
    delete_ingress(handle, index)
        .await
        .or_else(|e| match &e {
            // Already gone (ENOENT / EINVAL from the kernel): nothing to undo.
            rtnetlink::Error::NetlinkError(m)
                if matches!(m.raw_code().abs(), libc::ENOENT | libc::EINVAL) =>
            {
                Ok(())
            }
            _ => Err(e),
        })
        .map_err(failed(
            path,
            format!("removing the ingress qdisc of {name}"),
        ))
}
