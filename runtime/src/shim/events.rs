//! Task events for containerd, sent in the order they are queued by one thread of their
//! own: a request handler never waits on containerd, and an exit is never published
//! before the start that it follows.

use std::sync::mpsc;
use std::sync::Mutex;

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskPaused, TaskResumed,
    TaskStart,
};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;
use slog::{debug, warn, Logger};

/// One event with the topic containerd files it under.
pub enum Event {
    Create(TaskCreate),
    Start(TaskStart),
    Exit(TaskExit),
    ExecAdded(TaskExecAdded),
    ExecStarted(TaskExecStarted),
    Paused(TaskPaused),
    Resumed(TaskResumed),
    Delete(TaskDelete),
}

impl Event {
    fn topic(&self) -> &'static str {
        match self {
            Event::Create(_) => topics::TASK_CREATE_EVENT_TOPIC,
            Event::Start(_) => topics::TASK_START_EVENT_TOPIC,
            Event::Exit(_) => topics::TASK_EXIT_EVENT_TOPIC,
            Event::ExecAdded(_) => topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Event::ExecStarted(_) => topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Event::Paused(_) => topics::TASK_PAUSED_EVENT_TOPIC,
            Event::Resumed(_) => topics::TASK_RESUMED_EVENT_TOPIC,
            Event::Delete(_) => topics::TASK_DELETE_EVENT_TOPIC,
        }
    }

    fn into_message(self) -> Box<dyn MessageDyn> {
        match self {
            Event::Create(e) => Box::new(e),
            Event::Start(e) => Box::new(e),
            Event::Exit(e) => Box::new(e),
            Event::ExecAdded(e) => Box::new(e),
            Event::ExecStarted(e) => Box::new(e),
            Event::Paused(e) => Box::new(e),
            Event::Resumed(e) => Box::new(e),
            Event::Delete(e) => Box::new(e),
        }
    }
}

/// The queue in front of containerd's event service.
pub struct Events {
    queue: Mutex<mpsc::Sender<Event>>,
}

impl Events {
    /// Starts the sending thread; it ends when the `Events` is dropped.
    pub fn start(publisher: RemotePublisher, namespace: String, log: Logger) -> Events {
        let (queue, events) = mpsc::channel::<Event>();
        std::thread::spawn(move || {
            for event in events {
                let topic = event.topic();
                debug!(log, "publishing"; "topic" => topic);
                let result = publisher.publish(
                    containerd_shim::Context::default(),
                    topic,
                    &namespace,
                    event.into_message(),
                );
                if let Err(e) = result {
                    warn!(log, "publishing an event to containerd"; "topic" => topic,
                          "error" => e.to_string());
                }
            }
        });
        Events {
            queue: Mutex::new(queue),
        }
    }

    pub fn send(&self, event: Event) {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // The receiver lives as long as the process: a failed send means we are exiting.
        let _ = queue.send(event);
    }
}
