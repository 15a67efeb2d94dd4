//! A Server-Sent Events reader over a real HTTP response (reqwest), for `GET /events`.

use std::time::Duration;

/// One block of the stream: a comment (`: keep-alive`) or an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Comment(String),
    Event {
        event: String,
        data: serde_json::Value,
    },
}

/// An open `GET /events` stream.
pub struct EventStream {
    res: reqwest::Response,
    buffer: String,
    /// The body ended (the server closed the stream).
    pub ended: bool,
}

impl EventStream {
    /// Opens `GET {url}` with `token`; panics unless the answer is a 200 event stream.
    pub async fn open(client: &reqwest::Client, url: &str, token: &str) -> Self {
        let res = client.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(res.status(), 200, "GET {url}");
        assert_eq!(
            res.headers()["content-type"],
            "text/event-stream",
            "GET {url}"
        );
        let mut stream = Self {
            res,
            buffer: String::new(),
            ended: false,
        };
        // The stream opens with a keep-alive: from then on events are delivered.
        match stream.next_block(Duration::from_secs(5)).await {
            Some(Block::Comment(c)) if c == "keep-alive" => {}
            other => panic!("the stream did not open with a keep-alive: {other:?}"),
        }
        stream
    }

    /// The next block within `limit`; `None` when the stream ended or nothing came.
    pub async fn next_block(&mut self, limit: Duration) -> Option<Block> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(block.trim_end_matches('\n')));
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.res.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// The next event (comments skipped) within `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Option<(String, serde_json::Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_block(left).await? {
                Block::Event { event, data } => return Some((event, data)),
                Block::Comment(_) => {}
            }
        }
    }

    /// Events until one satisfies `until` (returned last), within `limit`; panics
    /// naming `what` otherwise.
    pub async fn until(
        &mut self,
        limit: Duration,
        what: &str,
        until: impl Fn(&str, &serde_json::Value) -> bool,
    ) -> Vec<(String, serde_json::Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((event, data)) = self.next_event(left).await else {
                panic!("no event {what} within {limit:?}; saw {seen:#?}");
            };
            let done = until(&event, &data);
            seen.push((event, data));
            if done {
                return seen;
            }
        }
    }
}

fn parse(block: &str) -> Block {
    let mut event = String::from("message");
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            return Block::Comment(comment.trim().to_owned());
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_owned(),
            "data" => data.push(value),
            other => panic!("unexpected field {other:?} in {block:?}"),
        }
    }
    let data = serde_json::from_str(&data.join("\n"))
        .unwrap_or_else(|e| panic!("data of {block:?} is not JSON: {e}"));
    Block::Event { event, data }
}
