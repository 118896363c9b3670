//! A worker of daisy 2.0 (funkelab's blockwise scheduler, `pip install daisy`): its side of the
//! TCP protocol, so `unet predict --daisy-worker` runs as a task inside daisy pipelines.
//!
//! The worker finds its scheduler through `DAISY_CONTEXT` (`key=value:key=value`, values
//! percent-encoded for `%`, `:` and `=`; the keys used are `hostname`, `port`, `task_id` and
//! `worker_id`). Every message is one frame: a u32 big-endian length, then a version byte (2),
//! then the message in bincode's standard encoding (variable-length integers, zigzag for signed
//! ones; a string or sequence is its length then its items; an enum its variant index; an
//! `Option` a 0 or 1 byte). The worker asks for a block (`AcquireBlock`), the scheduler answers
//! with one (`SendBlock`) or with `RequestShutdown` when none is left, and the worker returns the
//! block as done (`ReleaseBlock`) or failed (`BlockFailed`, with the error). The frames in
//! `tests/fixtures/daisy/frames.json` were recorded from daisy 2.0.0 itself
//! (`daisy_frames.py` beside them); the tests decode and re-encode them byte for byte.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{bail, Context, Result};

/// The wire version daisy 2.0 writes before every message.
const PROTOCOL_VERSION: u8 = 2;
/// The largest frame daisy sends or accepts.
const MAX_FRAME: u32 = 64 * 1024 * 1024;

/// Where a worker's scheduler is, from `DAISY_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaisyContext {
    /// The scheduler's host.
    pub hostname: String,
    /// Its TCP port.
    pub port: u16,
    /// The task whose blocks this worker takes.
    pub task_id: String,
    /// The worker's number, when daisy started it (it ties the connection to the worker slot).
    pub worker_id: Option<u64>,
}

/// Undoes daisy's percent-encoding of `%`, `:` and `=` in a context value; any other `%` stays.
fn decode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 3).unwrap_or("");
        let decoded = match escape.to_ascii_uppercase().as_str() {
            "25" => Some('%'),
            "3A" => Some(':'),
            "3D" => Some('='),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl DaisyContext {
    /// Parses the value of `DAISY_CONTEXT`. Keys other than the four a worker needs are ignored.
    pub fn parse(text: &str) -> Result<Self> {
        let mut hostname = None;
        let mut port = None;
        let mut task_id = None;
        let mut worker_id = None;
        for pair in text.split(':').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                bail!("DAISY_CONTEXT={text}: {pair:?} is not key=value");
            };
            let value = decode_value(value);
            match key {
                "hostname" => hostname = Some(value),
                "port" => {
                    port = Some(value.parse::<u16>().with_context(|| {
                        format!("DAISY_CONTEXT={text}: port {value:?} is not a port number")
                    })?)
                }
                "task_id" => task_id = Some(value),
                // daisy gives -1 to a worker it did not start.
                "worker_id" => worker_id = value.parse::<u64>().ok(),
                _ => {}
            }
        }
        let missing = |what: &str| format!("DAISY_CONTEXT={text}: no {what}");
        Ok(Self {
            hostname: hostname.with_context(|| missing("hostname"))?,
            port: port.with_context(|| missing("port"))?,
            task_id: task_id.with_context(|| missing("task_id"))?,
            worker_id,
        })
    }

    /// The context of this process: `DAISY_CONTEXT`, which daisy sets for the workers it starts.
    pub fn from_env() -> Result<Self> {
        let text = std::env::var("DAISY_CONTEXT").context(
            "--daisy-worker needs DAISY_CONTEXT, which daisy sets for the workers it starts \
             (pass the worker function's context on: env DAISY_CONTEXT=context.to_env())",
        )?;
        Self::parse(&text)
    }
}

/// A region of a daisy task: its offset and shape, one number per dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roi {
    /// The first voxel.
    pub offset: Vec<i64>,
    /// The extent.
    pub shape: Vec<i64>,
}

/// Where a block is in its life, as daisy counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    /// Not handed out yet.
    Created,
    /// With a worker.
    Processing,
    /// Done.
    Success,
    /// Failed; daisy may retry it.
    Failed,
}

/// A block as daisy hands it out and takes it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// What the block may read (unet reads its own context from the volume and ignores it).
    pub read_roi: Roi,
    /// What the block writes.
    pub write_roi: Roi,
    /// The task it belongs to.
    pub task_id: String,
    /// daisy's number for the block within its task.
    pub spatial_id: u64,
    /// Its status.
    pub status: BlockStatus,
}

/// One message of daisy 2.0's worker protocol, in its wire order.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Worker: a block, please.
    AcquireBlock {
        /// The task.
        task_id: String,
        /// The worker's number, if daisy started it.
        worker_id: Option<u64>,
    },
    /// Scheduler: this block, within this many seconds (after which daisy hands it out again).
    SendBlock {
        /// The block.
        block: Block,
        /// The task's block timeout.
        timeout_secs: Option<f64>,
    },
    /// Worker: this block is done.
    ReleaseBlock {
        /// The block, its status `Success`.
        block: Block,
    },
    /// Worker: this block failed.
    BlockFailed {
        /// The block, its status `Failed`.
        block: Block,
        /// Why.
        error: String,
    },
    /// Scheduler: nothing is left for this worker.
    RequestShutdown,
    /// Worker: leaving.
    Disconnect,
}

/// bincode's standard encoding of the values daisy's messages hold.
#[derive(Default)]
struct Encoder(Vec<u8>);

impl Encoder {
    fn unsigned(&mut self, v: u64) {
        match v {
            0..=250 => self.0.push(v as u8),
            251..=0xffff => {
                self.0.push(251);
                self.0.extend_from_slice(&(v as u16).to_le_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.0.push(252);
                self.0.extend_from_slice(&(v as u32).to_le_bytes());
            }
            _ => {
                self.0.push(253);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    fn signed(&mut self, v: i64) {
        self.unsigned(((v << 1) ^ (v >> 63)) as u64);
    }

    fn string(&mut self, s: &str) {
        self.unsigned(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn coordinate(&mut self, values: &[i64]) {
        self.unsigned(values.len() as u64);
        for &v in values {
            self.signed(v);
        }
    }

    fn block(&mut self, b: &Block) {
        for roi in [&b.read_roi, &b.write_roi] {
            self.coordinate(&roi.offset);
            self.coordinate(&roi.shape);
        }
        self.string(&b.task_id);
        self.unsigned(b.spatial_id);
        self.unsigned(match b.status {
            BlockStatus::Created => 0,
            BlockStatus::Processing => 1,
            BlockStatus::Success => 2,
            BlockStatus::Failed => 3,
        });
        // No resource statistics: the task's `resource_tracking` is daisy's own measurement.
        self.0.push(0);
    }
}

/// Reads bincode's standard encoding; every error says what was being read.
struct Decoder<'a>(&'a [u8]);

impl Decoder<'_> {
    fn bytes(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if self.0.len() < n {
            bail!("a daisy message ends inside its {what}");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        Ok(self.bytes(1, what)?[0])
    }

    fn unsigned(&mut self, what: &str) -> Result<u64> {
        let le = |b: &[u8]| {
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
        };
        Ok(match self.byte(what)? {
            v @ 0..=250 => u64::from(v),
            251 => le(self.bytes(2, what)?),
            252 => le(self.bytes(4, what)?),
            253 => le(self.bytes(8, what)?),
            tag => bail!("a daisy message has integer tag {tag} in its {what} (128-bit?)"),
        })
    }

    fn signed(&mut self, what: &str) -> Result<i64> {
        let z = self.unsigned(what)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn length(&mut self, what: &str) -> Result<usize> {
        let n = self.unsigned(what)?;
        if n > self.0.len() as u64 {
            bail!("a daisy message claims {n} items in its {what}, more than it holds");
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.length(what)?;
        String::from_utf8(self.bytes(n, what)?.to_vec())
            .with_context(|| format!("the {what} of a daisy message is not UTF-8"))
    }

    fn option(&mut self, what: &str) -> Result<bool> {
        match self.byte(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => bail!("a daisy message has option tag {tag} in its {what}"),
        }
    }

    fn coordinate(&mut self, what: &str) -> Result<Vec<i64>> {
        let n = self.length(what)?;
        (0..n).map(|_| self.signed(what)).collect()
    }

    fn roi(&mut self, what: &str) -> Result<Roi> {
        Ok(Roi {
            offset: self.coordinate(what)?,
            shape: self.coordinate(what)?,
        })
    }

    fn block(&mut self) -> Result<Block> {
        let read_roi = self.roi("read ROI")?;
        let write_roi = self.roi("write ROI")?;
        let task_id = self.string("task id")?;
        let spatial_id = self.unsigned("block id")?;
        let status = match self.unsigned("block status")? {
            0 => BlockStatus::Created,
            1 => BlockStatus::Processing,
            2 => BlockStatus::Success,
            3 => BlockStatus::Failed,
            s => bail!("a daisy block has status {s}, which daisy 2.0 does not have"),
        };
        if self.option("block statistics")? {
            bail!("daisy sent a block carrying resource statistics, which only workers attach");
        }
        Ok(Block {
            read_roi,
            write_roi,
            task_id,
            spatial_id,
            status,
        })
    }
}

impl Message {
    /// The message's bincode bytes (without the frame).
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        match self {
            Message::AcquireBlock { task_id, worker_id } => {
                e.unsigned(0);
                e.string(task_id);
                match worker_id {
                    Some(id) => {
                        e.0.push(1);
                        e.unsigned(*id);
                    }
                    None => e.0.push(0),
                }
            }
            Message::SendBlock {
                block,
                timeout_secs,
            } => {
                e.unsigned(1);
                e.block(block);
                match timeout_secs {
                    Some(t) => {
                        e.0.push(1);
                        e.0.extend_from_slice(&t.to_le_bytes());
                    }
                    None => e.0.push(0),
                }
            }
            Message::ReleaseBlock { block } => {
                e.unsigned(2);
                e.block(block);
            }
            Message::BlockFailed { block, error } => {
                e.unsigned(3);
                e.block(block);
                e.string(error);
            }
            Message::RequestShutdown => e.unsigned(4),
            Message::Disconnect => e.unsigned(5),
        }
        e.0
    }

    /// A message from its bincode bytes; trailing bytes are an error.
    fn decode(bytes: &[u8]) -> Result<Self> {
        let mut d = Decoder(bytes);
        let message = match d.unsigned("message kind")? {
            0 => Message::AcquireBlock {
                task_id: d.string("task id")?,
                worker_id: match d.option("worker id")? {
                    true => Some(d.unsigned("worker id")?),
                    false => None,
                },
            },
            1 => Message::SendBlock {
                block: d.block()?,
                timeout_secs: match d.option("timeout")? {
                    true => {
                        let b = d.bytes(8, "timeout")?;
                        Some(f64::from_le_bytes(b.try_into().expect("8 bytes")))
                    }
                    false => None,
                },
            },
            2 => Message::ReleaseBlock { block: d.block()? },
            3 => Message::BlockFailed {
                block: d.block()?,
                error: d.string("error")?,
            },
            4 => Message::RequestShutdown,
            5 => Message::Disconnect,
            k => bail!("daisy sent message kind {k}, which daisy 2.0 does not have"),
        };
        if !d.0.is_empty() {
            bail!(
                "a daisy message has {} bytes after its end (another daisy version?)",
                d.0.len()
            );
        }
        Ok(message)
    }

    /// The whole frame: length, version, message.
    fn frame(&self) -> Vec<u8> {
        let body = self.encode();
        let mut frame = Vec::with_capacity(body.len() + 5);
        frame.extend_from_slice(&(body.len() as u32 + 1).to_be_bytes());
        frame.push(PROTOCOL_VERSION);
        frame.extend_from_slice(&body);
        frame
    }
}

/// Reads one frame; `None` when the scheduler closed the connection between frames.
fn read_frame(stream: &mut impl Read) -> Result<Option<Message>> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).context("reading from the daisy scheduler"),
    }
    let length = u32::from_be_bytes(length);
    if length == 0 || length > MAX_FRAME {
        bail!("the daisy scheduler sent a frame of {length} bytes");
    }
    let mut body = vec![0u8; length as usize];
    stream
        .read_exact(&mut body)
        .context("reading a message from the daisy scheduler")?;
    if body[0] != PROTOCOL_VERSION {
        bail!(
            "the daisy scheduler speaks protocol version {}, this worker daisy 2.0's ({PROTOCOL_VERSION})",
            body[0]
        );
    }
    Message::decode(&body[1..]).map(Some)
}

/// A block from the scheduler and how long daisy gives it.
#[derive(Debug)]
pub struct Assigned {
    /// The block.
    pub block: Block,
    /// The task's block timeout, after which daisy hands the block to another worker.
    pub timeout_secs: Option<f64>,
}

/// A connection to a daisy 2.0 scheduler.
#[derive(Debug)]
pub struct DaisyClient {
    stream: TcpStream,
    context: DaisyContext,
}

impl DaisyClient {
    /// Connects to the scheduler `context` names.
    pub fn connect(context: DaisyContext) -> Result<Self> {
        let stream =
            TcpStream::connect((context.hostname.as_str(), context.port)).with_context(|| {
                format!(
                    "connecting to the daisy scheduler at {}:{}",
                    context.hostname, context.port
                )
            })?;
        stream.set_nodelay(true).ok();
        Ok(Self { stream, context })
    }

    fn send(&mut self, message: &Message) -> Result<()> {
        self.stream
            .write_all(&message.frame())
            .and_then(|()| self.stream.flush())
            .context("writing to the daisy scheduler")
    }

    /// The next block of this worker's task, or `None` when the scheduler has no more.
    pub fn acquire(&mut self) -> Result<Option<Assigned>> {
        self.send(&Message::AcquireBlock {
            task_id: self.context.task_id.clone(),
            worker_id: self.context.worker_id,
        })?;
        match read_frame(&mut self.stream)? {
            Some(Message::SendBlock {
                block,
                timeout_secs,
            }) => Ok(Some(Assigned {
                block,
                timeout_secs,
            })),
            Some(Message::RequestShutdown) | None => Ok(None),
            Some(other) => bail!("the daisy scheduler answered a block request with {other:?}"),
        }
    }

    /// Returns `block` as done.
    pub fn release(&mut self, mut block: Block) -> Result<()> {
        block.status = BlockStatus::Success;
        self.send(&Message::ReleaseBlock { block })
    }

    /// Returns `block` as failed, with why.
    pub fn fail(&mut self, mut block: Block, error: &str) -> Result<()> {
        block.status = BlockStatus::Failed;
        self.send(&Message::BlockFailed {
            block,
            error: error.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> Vec<(String, Vec<u8>)> {
        let text = include_str!("../tests/fixtures/daisy/frames.json");
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        json["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let hex = f["hex"].as_str().unwrap();
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                (f["direction"].as_str().unwrap().to_string(), bytes)
            })
            .collect()
    }

    #[test]
    fn frames_recorded_from_daisy_decode_and_encode_byte_for_byte() {
        let frames = recorded();
        assert_eq!(frames.len(), 13);
        let mut messages = Vec::new();
        for (_, bytes) in &frames {
            let message = read_frame(&mut bytes.as_slice()).unwrap().unwrap();
            assert_eq!(&message.frame(), bytes, "{message:?}");
            messages.push(message);
        }
        assert_eq!(
            messages[0],
            Message::AcquireBlock {
                task_id: "unet".into(),
                worker_id: Some(0)
            }
        );
        // The third block of a (1, 12, 20) task cut into 1 x 10 x 10: y from 10, clipped to 2.
        let Message::SendBlock {
            block,
            timeout_secs,
        } = &messages[7]
        else {
            panic!("{:?}", messages[7]);
        };
        assert_eq!(
            block.write_roi,
            Roi {
                offset: vec![0, 10, 0],
                shape: vec![1, 2, 10]
            }
        );
        assert_eq!(block.read_roi, block.write_roi);
        assert_eq!((block.spatial_id, block.status), (2, BlockStatus::Created));
        assert_eq!(*timeout_secs, Some(600.0));
        assert!(
            matches!(&messages[2], Message::ReleaseBlock { block } if block.status == BlockStatus::Success)
        );
        assert!(
            matches!(&messages[5], Message::BlockFailed { block, error } if block.status == BlockStatus::Failed && error == "boom")
        );
        // daisy's last word, recorded alongside: no block is left.
        assert_eq!(
            read_frame(&mut [0, 0, 0, 2, 2, 4].as_slice()).unwrap(),
            Some(Message::RequestShutdown)
        );
    }

    #[test]
    fn a_client_takes_blocks_until_the_scheduler_has_none() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let block = |id: u64| Block {
            read_roi: Roi {
                offset: vec![0, 0, 64 * id as i64],
                shape: vec![1, 32, 64],
            },
            write_roi: Roi {
                offset: vec![0, 0, 64 * id as i64],
                shape: vec![1, 32, 64],
            },
            task_id: "t".into(),
            spatial_id: id,
            status: BlockStatus::Processing,
        };
        let scheduler = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut returned = Vec::new();
            for id in 0..2 {
                let ask = read_frame(&mut stream).unwrap().unwrap();
                assert_eq!(
                    ask,
                    Message::AcquireBlock {
                        task_id: "t".into(),
                        worker_id: Some(7)
                    }
                );
                let send = Message::SendBlock {
                    block: block(id),
                    timeout_secs: None,
                };
                stream.write_all(&send.frame()).unwrap();
                returned.push(read_frame(&mut stream).unwrap().unwrap());
            }
            read_frame(&mut stream).unwrap().unwrap();
            stream.write_all(&Message::RequestShutdown.frame()).unwrap();
            returned
        });
        let context = DaisyContext::parse(&format!(
            "hostname=127.0.0.1:port={port}:task_id=t:worker_id=7"
        ))
        .unwrap();
        let mut client = DaisyClient::connect(context).unwrap();
        let first = client.acquire().unwrap().unwrap();
        assert_eq!(first.block, block(0));
        client.release(first.block).unwrap();
        let second = client.acquire().unwrap().unwrap();
        client.fail(second.block, "no").unwrap();
        assert!(client.acquire().unwrap().is_none());
        let returned = scheduler.join().unwrap();
        let done = Block {
            status: BlockStatus::Success,
            ..block(0)
        };
        let failed = Block {
            status: BlockStatus::Failed,
            ..block(1)
        };
        assert_eq!(
            returned,
            vec![
                Message::ReleaseBlock { block: done },
                Message::BlockFailed {
                    block: failed,
                    error: "no".into()
                }
            ]
        );
    }

    #[test]
    fn integers_take_bincodes_variable_lengths() {
        for v in [
            0u64,
            250,
            251,
            65535,
            65536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let mut e = Encoder::default();
            e.unsigned(v);
            assert_eq!(Decoder(&e.0).unsigned("test").unwrap(), v);
        }
        for v in [0i64, -1, 1, -126, 126, i64::MIN, i64::MAX] {
            let mut e = Encoder::default();
            e.signed(v);
            assert_eq!(Decoder(&e.0).signed("test").unwrap(), v);
        }
    }

    #[test]
    fn damaged_frames_are_errors_not_panics() {
        let frames = recorded();
        let send = &frames[1].1;
        for cut in 0..send.len() {
            let mut part = send[..cut].to_vec();
            if cut >= 4 {
                // A frame whose length says what it holds, cut short inside the message.
                let n = (cut - 4) as u32;
                part[..4].copy_from_slice(&n.to_be_bytes());
            }
            let _ = read_frame(&mut part.as_slice());
        }
        let mut other_version = send.clone();
        other_version[4] = 1;
        let err = read_frame(&mut other_version.as_slice()).unwrap_err();
        assert!(err.to_string().contains("version 1"), "{err}");
        let mut long = send.clone();
        long.push(0);
        long[..4].copy_from_slice(&((send.len() - 3) as u32).to_be_bytes());
        assert!(read_frame(&mut long.as_slice()).is_err());
    }

    #[test]
    fn the_context_is_read_as_daisy_writes_it() {
        let c = DaisyContext::parse(
            "worker_id=3:resource_tracking=0:hostname=node07:port=39923:task_id=stage%3D1%3Aa%25:logdir=C%3A\\logs",
        )
        .unwrap();
        assert_eq!(
            c,
            DaisyContext {
                hostname: "node07".into(),
                port: 39923,
                task_id: "stage=1:a%".into(),
                worker_id: Some(3)
            }
        );
        assert_eq!(decode_value("50%off%"), "50%off%");
        let c = DaisyContext::parse("hostname=h:port=1:task_id=t:worker_id=-1").unwrap();
        assert_eq!(c.worker_id, None);
        for bad in [
            "hostname=h:task_id=t",
            "hostname=h:port=x:task_id=t",
            "port=1:junk",
        ] {
            assert!(DaisyContext::parse(bad).is_err(), "{bad}");
        }
    }
}
