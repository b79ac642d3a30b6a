//! A scripted jig link for unit tests of the workflow: it answers from a
//! script and panics on any request the script did not expect, so a test
//! cannot pass by accident (after probe-rs's `FakeProbe`).

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;

use super::frame::{Frame, Kind};
use super::link::{JigLink, LinkError};
use super::protocol::{JigEvent, Request};

/// One expected exchange.
#[derive(Debug)]
pub enum Scripted {
    /// The next request must have this verb; answer with these arguments or
    /// this error.
    Answer {
        verb: &'static str,
        reply: Result<Vec<(String, String)>, LinkError>,
    },
    /// Deliver this event at the next `next_event`.
    Event(JigEvent),
}

pub struct ScriptedLink {
    script: VecDeque<Scripted>,
    /// Every request received, for assertions.
    pub received: Vec<Request>,
}

impl ScriptedLink {
    pub fn new(script: Vec<Scripted>) -> ScriptedLink {
        ScriptedLink {
            script: script.into(),
            received: Vec::new(),
        }
    }

    /// True when every scripted step was used.
    pub fn finished(&self) -> bool {
        self.script.is_empty()
    }
}

#[async_trait]
impl JigLink for ScriptedLink {
    async fn call(&mut self, req: &Request) -> Result<Frame, LinkError> {
        self.received.push(req.clone());
        match self.script.pop_front() {
            Some(Scripted::Answer { verb, reply }) if verb == req.verb() => reply.map(|args| {
                let mut f = Frame::new(Kind::Response, 0, "OK");
                f.args = args;
                f
            }),
            other => panic!(
                "scripted jig: unexpected {} (script had {other:?})",
                req.verb()
            ),
        }
    }

    async fn next_event(&mut self, wait: Duration) -> Result<Option<JigEvent>, LinkError> {
        if let Some(Scripted::Event(_)) = self.script.front()
            && let Some(Scripted::Event(e)) = self.script.pop_front()
        {
            return Ok(Some(e));
        }
        tokio::time::sleep(wait).await;
        Ok(None)
    }

    fn device(&self) -> &str {
        "scripted"
    }
}
