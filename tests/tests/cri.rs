//! A real CRI client: a pod of two containers through containerd 1.6's CRI plugin (API v1,
//! gRPC over containerd's socket), as a kubelet would drive it. The containerd is private
//! (its own root, state, socket, CNI configuration and network namespace; see
//! [`CriContainerd`]) and has two runtime handlers: `runc`, the baseline that checks the
//! client and the daemon's setup, and `ward` (runtime type io.containerd.ward.v2, ward's
//! shim), where the whole pod is one microVM.
//!
//! The ward test also prints how long RunPodSandbox and the second container's
//! CreateContainer + StartContainer take.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, ContainerStatsRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, LinuxPodSandboxConfig,
    ListContainersRequest, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxState, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StatusRequest, StopContainerRequest, StopPodSandboxRequest,
    VersionRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};
use ward_e2e::engines::{CriContainerd, IMAGE, RUNC_HANDLER, WARD_HANDLER};
use ward_e2e::{pids_mentioning, text, Ward};

/// Awaits a CRI call with a deadline; its response, or a panic naming the call, the gRPC
/// status and the end of containerd's log.
macro_rules! call {
    ($log:expr, $secs:expr, $what:expr, $fut:expr) => {{
        match tokio::time::timeout(Duration::from_secs($secs), $fut).await {
            Err(_) => panic!(
                "CRI {} did not answer within {} s; containerd's log:\n{}",
                $what,
                $secs,
                $log.log()
            ),
            Ok(Err(status)) => panic!(
                "CRI {} failed: {:?}: {}; containerd's log:\n{}",
                $what,
                status.code(),
                status.message(),
                $log.log()
            ),
            Ok(Ok(response)) => response.into_inner(),
        }
    }};
}

async fn connect(socket: &Path) -> RuntimeServiceClient<Channel> {
    let path = socket.to_path_buf();
    // The URI is a placeholder: the connector dials the Unix socket.
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    RuntimeServiceClient::new(channel)
}

/// The host's QEMU processes whose command line mentions any of `ids`, each as
/// "PID: command line".
fn qemus_mentioning(ids: &[&str]) -> Vec<String> {
    let mut found = BTreeSet::new();
    for id in ids {
        for pid in pids_mentioning(id) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| text(&c).replace('\0', " "))
                .unwrap_or_default();
            let program = cmdline.split(' ').next().unwrap_or("");
            if program
                .rsplit('/')
                .next()
                .unwrap_or("")
                .starts_with("qemu-system")
            {
                found.insert(format!("{pid}: {cmdline}"));
            }
        }
    }
    found.into_iter().collect()
}

/// The target of a /proc/self/ns link as `ls -l` shows it (busybox has no readlink here).
fn ns_link(listing: &str) -> String {
    listing
        .rsplit_once("->")
        .map(|(_, target)| target.trim().to_string())
        .unwrap_or_else(|| panic!("not a link listing: {listing:?}"))
}

struct Timings {
    run_pod_sandbox: Duration,
    second_container: Duration,
}

/// The pod's whole life through CRI with runtime handler `handler`; asserts along the way.
async fn pod_lifecycle(cri: &CriContainerd, handler: &str) -> Timings {
    let mut client = connect(&cri.socket).await;
    let version = call!(
        cri,
        30,
        "Version",
        client.version(VersionRequest::default())
    );
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");

    // Runtime and network ready: the CNI configuration has been loaded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = call!(cri, 30, "Status", client.status(StatusRequest::default()));
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        if conditions.len() >= 2 && conditions.iter().all(|c| c.status) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CRI not ready within 30 s: {conditions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let logs = cri.dir.join("pod-logs");
    std::fs::create_dir_all(&logs).expect("pod log directory");
    let pod_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "ward-pod".into(),
            uid: format!("ward-e2e-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "ward-pod".into(),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let started = Instant::now();
    let pod = call!(
        cri,
        300,
        "RunPodSandbox",
        client.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: handler.into(),
        })
    )
    .pod_sandbox_id;
    let run_pod_sandbox = started.elapsed();
    eprintln!("[{handler}] RunPodSandbox took {run_pod_sandbox:?}");

    let status = call!(
        cri,
        30,
        "PodSandboxStatus",
        client.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
    )
    .status
    .expect("PodSandboxStatus has a status");
    assert_eq!(
        status.state,
        PodSandboxState::SandboxReady as i32,
        "{status:?}"
    );
    assert_eq!(status.runtime_handler, handler, "{status:?}");
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    assert!(
        ip.starts_with("10.231.0."),
        "the pod's address from CNI: {ip:?}"
    );

    let mut containers = Vec::new();
    let mut second_container = Duration::ZERO;
    for name in ["one", "two"] {
        let started = Instant::now();
        let id = call!(
            cri,
            300,
            format!("CreateContainer {name}"),
            client.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: name.into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: IMAGE.into(),
                        ..Default::default()
                    }),
                    // Container one also serves HTTP on the pod's address (port 8080),
                    // for the second pod below.
                    command: if name == "one" {
                        vec![
                            "sh".into(),
                            "-c".into(),
                            format!(
                                "mkdir -p /www && echo served-by-{handler} > /www/index.html && \
                                 httpd -p 8080 -h /www && exec sleep 3600"
                            ),
                        ]
                    } else {
                        vec!["sleep".into(), "3600".into()]
                    },
                    log_path: format!("{name}.log"),
                    ..Default::default()
                }),
                sandbox_config: Some(pod_config.clone()),
            })
        )
        .container_id;
        call!(
            cri,
            300,
            format!("StartContainer {name}"),
            client.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
        );
        if name == "two" {
            second_container = started.elapsed();
            eprintln!("[{handler}] the second container's CreateContainer + StartContainer took {second_container:?}");
        }
        containers.push(id);
    }

    let listed = call!(
        cri,
        30,
        "ListContainers",
        client.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
    )
    .containers;
    let mut listed_ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    listed_ids.sort();
    let mut want: Vec<&str> = containers.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(listed_ids, want, "ListContainers: {listed:?}");
    assert!(
        listed
            .iter()
            .all(|c| c.state == ContainerState::ContainerRunning as i32),
        "ListContainers: not all running: {listed:?}"
    );

    // ExecSync: (stdout, exit code) of `cmd` in container `id`.
    macro_rules! exec {
        ($id:expr, $cmd:expr) => {{
            let cmd: Vec<String> = $cmd.iter().map(|s: &&str| s.to_string()).collect();
            let what = format!("ExecSync {cmd:?}");
            let r = call!(
                cri,
                120,
                what,
                client.exec_sync(ExecSyncRequest {
                    container_id: $id.clone(),
                    cmd,
                    timeout: 60,
                })
            );
            (text(&r.stdout), r.exit_code, text(&r.stderr))
        }};
    }
    let (one, two) = (&containers[0], &containers[1]);
    let (out, code, err) = exec!(one, ["echo", "hi"]);
    assert_eq!((out.as_str(), code), ("hi\n", 0), "stderr: {err}");
    let (out, code, err) = exec!(two, ["sh", "-c", "echo out; exit 3"]);
    assert_eq!((out.as_str(), code), ("out\n", 3), "stderr: {err}");

    let stats = call!(
        cri,
        60,
        "ContainerStats",
        client.container_stats(ContainerStatsRequest {
            container_id: one.clone(),
        })
    )
    .stats
    .expect("ContainerStats has stats");
    let memory = stats.memory.unwrap_or_default();
    let working_set = memory.working_set_bytes.map(|v| v.value).unwrap_or(0);
    let usage = memory.usage_bytes.map(|v| v.value).unwrap_or(0);
    eprintln!("[{handler}] ContainerStats memory: working set {working_set} B, usage {usage} B");
    assert!(
        working_set > 0 || usage > 0,
        "ContainerStats shows no memory: {stats:?}"
    );

    // One pod: shared hostname (UTS), IPC and network namespaces; each container has its
    // own root filesystem and mount namespace.
    for id in [one, two] {
        let (out, code, err) = exec!(id, ["hostname"]);
        assert_eq!(
            (out.trim(), code),
            ("ward-pod", 0),
            "hostname; stderr: {err}"
        );
    }
    for ns in ["net", "ipc", "uts", "mnt"] {
        let path = format!("/proc/self/ns/{ns}");
        let (a, code_a, err_a) = exec!(one, ["ls", "-l", path.as_str()]);
        let (b, code_b, err_b) = exec!(two, ["ls", "-l", path.as_str()]);
        assert_eq!((code_a, code_b), (0, 0), "ls -l {path}: {err_a} {err_b}");
        let (a, b) = (ns_link(&a), ns_link(&b));
        if ns == "mnt" {
            assert_ne!(a, b, "the containers share their mount namespace");
        } else {
            assert_eq!(a, b, "the containers do not share their {ns} namespace");
        }
    }
    let (_, code, err) = exec!(one, ["sh", "-c", "echo mine > /only-in-one"]);
    assert_eq!(code, 0, "writing in container one: {err}");
    let (_, code, _) = exec!(one, ["test", "-e", "/only-in-one"]);
    assert_eq!(code, 0, "container one does not see its own file");
    let (_, code, _) = exec!(two, ["test", "-e", "/only-in-one"]);
    assert_eq!(
        code, 1,
        "container two sees container one's root filesystem"
    );

    if handler == WARD_HANDLER {
        // One VM for the pod: the same guest kernel boot in both containers, and one QEMU
        // more on the host than before the pod.
        let (a, code_a, _) = exec!(one, ["cat", "/proc/sys/kernel/random/boot_id"]);
        let (b, code_b, _) = exec!(two, ["cat", "/proc/sys/kernel/random/boot_id"]);
        assert_eq!((code_a, code_b), (0, 0));
        assert_eq!(
            a.trim(),
            b.trim(),
            "the containers run in different kernels"
        );
        let (version, _, _) = exec!(one, ["cat", "/proc/version"]);
        assert!(version.contains("-ward"), "guest kernel: {version}");
        // On the host, one QEMU for the pod (its guest is named after the pod) and none for
        // either container.
        let vms = qemus_mentioning(&[&pod, one, two]);
        assert!(
            vms.len() == 1 && vms[0].contains(pod.as_str()),
            "the pod's QEMU processes: {vms:#?}"
        );
    }

    // The pod's address from CNI is its containers' own (for ward: the guest's NIC), and
    // a second pod on the bridge reaches the first one's server there.
    let (routes, code, err) = exec!(two, ["cat", "/proc/net/fib_trie"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        routes.contains(&ip),
        "the pod's address {ip} is not in the pod: {routes}"
    );
    let client_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "ward-pod-client".into(),
            uid: format!("ward-e2e-client-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "ward-pod-client".into(),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let client_pod = call!(
        cri,
        300,
        "RunPodSandbox (client)",
        client.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(client_config.clone()),
            runtime_handler: handler.into(),
        })
    )
    .pod_sandbox_id;
    let client_id = call!(
        cri,
        300,
        "CreateContainer client",
        client.create_container(CreateContainerRequest {
            pod_sandbox_id: client_pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "client".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "3600".into()],
                log_path: "client.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(client_config),
        })
    )
    .container_id;
    call!(
        cri,
        300,
        "StartContainer client",
        client.start_container(StartContainerRequest {
            container_id: client_id.clone(),
        })
    );
    // nc rather than wget: the image's static busybox crashes resolving names in wget.
    let get = format!(
        "i=0; while test $i -lt 20; do \
         echo -e 'GET / HTTP/1.0\\r\\n\\r' | nc -w 5 {ip} 8080 | grep served-by && exit 0; \
         sleep 1; i=$((i+1)); done; exit 1"
    );
    let (out, code, err) = exec!(client_id, ["sh", "-c", get.as_str()]);
    assert_eq!(
        (out.trim(), code),
        (format!("served-by-{handler}").as_str(), 0),
        "the second pod reaching {ip}:8080; stderr: {err}"
    );
    call!(
        cri,
        120,
        "StopPodSandbox (client)",
        client.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: client_pod.clone(),
        })
    );
    call!(
        cri,
        120,
        "RemovePodSandbox (client)",
        client.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: client_pod.clone(),
        })
    );

    for id in [one, two] {
        call!(
            cri,
            60,
            "StopContainer",
            client.stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 5,
            })
        );
    }
    let listed = call!(
        cri,
        30,
        "ListContainers",
        client.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
    )
    .containers;
    assert!(
        listed
            .iter()
            .all(|c| c.state == ContainerState::ContainerExited as i32),
        "ListContainers after StopContainer: {listed:?}"
    );
    call!(
        cri,
        120,
        "StopPodSandbox",
        client.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
    );
    call!(
        cri,
        120,
        "RemovePodSandbox",
        client.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
    );
    let pods = call!(
        cri,
        30,
        "ListPodSandbox",
        client.list_pod_sandbox(ListPodSandboxRequest::default())
    )
    .items;
    assert!(pods.is_empty(), "ListPodSandbox after removal: {pods:?}");
    let left = call!(
        cri,
        30,
        "ListContainers",
        client.list_containers(ListContainersRequest::default())
    )
    .containers;
    assert!(left.is_empty(), "ListContainers after removal: {left:?}");

    // Nothing of the pod remains: no process names it or its containers (the shim has
    // -id <pod>, QEMU the pod's guest name).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let named: Vec<i64> = [&pod, one, two]
            .iter()
            .flat_map(|id| pids_mentioning(id))
            .collect();
        if named.is_empty() {
            break;
        }
        let describe = |pids: &[i64]| -> Vec<String> {
            pids.iter()
                .map(|p| {
                    let c = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    format!("{p}: {}", text(&c).replace('\0', " "))
                })
                .collect()
        };
        assert!(
            Instant::now() < deadline,
            "20 s after RemovePodSandbox, processes of the pod remain: {:#?}",
            describe(&named)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    Timings {
        run_pod_sandbox,
        second_container,
    }
}

fn run(cri: &CriContainerd, handler: &str) -> Timings {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(pod_lifecycle(cri, handler))
}

/// The baseline: the same pod with runc, which checks the client and the daemon's setup.
#[test]
fn pod_of_two_containers_with_runc() {
    let cri = CriContainerd::start(None);
    run(&cri, RUNC_HANDLER);
}

/// The pod with ward: one microVM holding both containers.
#[test]
fn pod_of_two_containers_in_one_vm_with_ward() {
    let ward = Ward::new();
    let cri = CriContainerd::start(Some(&ward));
    let timings = run(&cri, WARD_HANDLER);
    eprintln!(
        "ward CRI timings: RunPodSandbox {:?}, second container create+start {:?}",
        timings.run_pod_sandbox, timings.second_container
    );
}
