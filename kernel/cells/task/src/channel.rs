//! Bounded channels with blocking send and receive. Dropping every sender, or the receiver,
//! disconnects the channel; the other side gets an error instead of blocking forever.

use crate::WaitQueue;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use keel_sync::IrqSafeMutex;

struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    senders: usize,
    receiver_alive: bool,
}

struct Shared<T> {
    state: IrqSafeMutex<State<T>>,
    not_empty: WaitQueue,
    not_full: WaitQueue,
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// The receiver is gone; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// Every sender is gone and the channel is empty.
#[derive(Debug, PartialEq, Eq)]
pub struct RecvError;

/// A channel holding at most `capacity` (at least 1) values in flight.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: IrqSafeMutex::new(State {
            queue: VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            senders: 1,
            receiver_alive: true,
        }),
        not_empty: WaitQueue::new(),
        not_full: WaitQueue::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Blocks while the channel is full.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let mut value = Some(value);
        let sent = self.shared.not_full.wait_until(|| {
            let mut state = self.shared.state.lock();
            if !state.receiver_alive {
                return Some(false);
            }
            if state.queue.len() < state.capacity {
                state.queue.extend(value.take());
                return Some(true);
            }
            None
        });
        if sent {
            self.shared.not_empty.notify_one();
            Ok(())
        } else {
            Err(SendError(value.take().expect("value kept when not sent")))
        }
    }
}

impl<T> Receiver<T> {
    /// Blocks while the channel is empty and a sender exists.
    pub fn recv(&self) -> Result<T, RecvError> {
        let result = self.shared.not_empty.wait_until(|| {
            let mut state = self.shared.state.lock();
            match state.queue.pop_front() {
                Some(v) => Some(Ok(v)),
                None if state.senders == 0 => Some(Err(RecvError)),
                None => None,
            }
        });
        if result.is_ok() {
            self.shared.not_full.notify_one();
        }
        result
    }

    pub fn try_recv(&self) -> Option<T> {
        let value = self.shared.state.lock().queue.pop_front();
        if value.is_some() {
            self.shared.not_full.notify_one();
        }
        value
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.state.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.state.lock().senders -= 1;
        self.shared.not_empty.notify_all();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let drained: VecDeque<T> = {
            let mut state = self.shared.state.lock();
            state.receiver_alive = false;
            core::mem::take(&mut state.queue)
        };
        drop(drained);
        self.shared.not_full.notify_all();
    }
}
