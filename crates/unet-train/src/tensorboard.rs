//! TensorBoard scalar event files, written and read without protobuf tooling.
//!
//! TensorBoard reads `events.out.tfevents.*` files: TFRecord frames (`u64` length, masked
//! CRC-32C of the length, the payload, masked CRC-32C of the payload, all little-endian), each
//! payload a protobuf `tensorflow.Event`. A scalar is an `Event { wall_time, step, summary {
//! value { tag, simple_value } } }`. Only these few fields are needed, so they are encoded by
//! hand here: the `tboard` crate generates them with `prost-build`, which needs the `protoc`
//! compiler at build time, which a fresh machine does not have.
//!
//! ```
//! use unet_train::tensorboard::{read_scalars, EventWriter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("unet-tb-doc-{}", std::process::id()));
//! let mut writer = EventWriter::create(&dir)?;
//! writer.write_scalar("val/mean_iou", 1, 0.75)?;
//! writer.flush()?;
//! let scalars = read_scalars(writer.path())?;
//! assert_eq!((scalars[0].tag.as_str(), scalars[0].step, scalars[0].value), ("val/mean_iou", 1, 0.75));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{EpochRecord, Error, Result};

/// Writes an epoch's scalars (`train/*`, `val/*`, step = epoch) and flushes the file.
pub fn write_epoch(writer: &mut EventWriter, record: &EpochRecord) -> Result<()> {
    let step = record.epoch as i64;
    let mut scalars = vec![
        ("train/loss", record.train_loss),
        ("train/lr", record.lr),
        ("train/samples_per_second", record.samples_per_second),
    ];
    if let Some(scale) = record.loss_scale {
        scalars.extend([
            ("train/loss_scale", scale),
            ("train/skipped_steps", record.skipped_steps as f64),
        ]);
    }
    let mut class_scalars: Vec<(String, f64)> = Vec::new();
    if let Some(v) = &record.validation {
        scalars.extend([
            ("val/loss", v.loss),
            ("val/pixel_accuracy", v.pixel_accuracy),
            ("val/mean_iou", v.mean_iou),
            ("val/dice", v.dice),
            ("val/v_rand", v.v_rand),
            ("val/v_info", v.v_info),
        ]);
        if let Some(c) = &v.classes {
            for (k, (iou, dice)) in c.iou_per_class.iter().zip(&c.dice_per_class).enumerate() {
                class_scalars.push((format!("val/iou_class_{k}"), *iou));
                class_scalars.push((format!("val/dice_class_{k}"), *dice));
            }
        }
        if let Some(c) = &v.calibrated {
            scalars.extend([
                ("val/calibrated_threshold", c.threshold),
                ("val/calibrated_pixel_accuracy", c.pixel_accuracy),
                ("val/calibrated_mean_iou", c.mean_iou),
            ]);
        }
    }
    for (tag, value) in scalars {
        writer.write_scalar(tag, step, value as f32)?;
    }
    for (tag, value) in &class_scalars {
        writer.write_scalar(tag, step, *value as f32)?;
    }
    writer.flush()
}

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarEvent {
    /// Seconds since the Unix epoch when it was written.
    pub wall_time: f64,
    /// The step (here: the epoch).
    pub step: i64,
    /// The tag (`train/loss`, `val/mean_iou`, ...).
    pub tag: String,
    /// The value.
    pub value: f32,
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bytewise with a table.
fn crc32c(data: &[u8]) -> u32 {
    const fn table() -> [u32; 256] {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    }
    const TABLE: [u32; 256] = table();
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// TFRecord's masked CRC: rotated and offset so that CRCs of CRCs stay well spread.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A field key: field number and wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32).
fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, u64::from(field) << 3 | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `Event { wall_time = 1; step = 2; file_version = 3 | summary = 5 }`.
fn encode_event(
    wall_time: f64,
    step: i64,
    file_version: Option<&str>,
    scalar: Option<(&str, f32)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    put_key(&mut out, 1, 1);
    out.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        put_key(&mut out, 2, 0);
        put_varint(&mut out, step as u64);
    }
    if let Some(version) = file_version {
        put_bytes(&mut out, 3, version.as_bytes());
    }
    if let Some((tag, value)) = scalar {
        // Summary.Value { tag = 1; simple_value = 2 }
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_key(&mut v, 2, 5);
        v.extend_from_slice(&value.to_le_bytes());
        // Summary { repeated Value value = 1 }
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &v);
        put_bytes(&mut out, 5, &summary);
    }
    out
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes scalars to a new `events.out.tfevents.*` file in a log directory (TensorBoard reads
/// every such file of a directory, so a resumed run simply adds one).
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it, starting with the file-version
    /// record TensorBoard expects.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self> {
        static FILES: AtomicU64 = AtomicU64::new(0);
        let dir = dir.as_ref();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let name = format!(
            "events.out.tfevents.{:010}.unet-rs.{}.{}",
            now() as u64,
            std::process::id(),
            FILES.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = File::create(&path).map_err(io(&path))?;
        let mut writer = Self {
            path,
            file: BufWriter::new(file),
        };
        writer.write_record(&encode_event(now(), 0, Some("brain.Event:2"), None))?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<()> {
        let len = (payload.len() as u64).to_le_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 16);
        frame.extend_from_slice(&len);
        frame.extend_from_slice(&masked_crc(&len).to_le_bytes());
        frame.extend_from_slice(payload);
        frame.extend_from_slice(&masked_crc(payload).to_le_bytes());
        self.file.write_all(&frame).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Appends one scalar.
    pub fn write_scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<()> {
        self.write_record(&encode_event(now(), step, None, Some((tag, value))))
    }

    /// Pushes what is buffered to the file (TensorBoard sees it from then on).
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// A protobuf reader over one message, for the few fields read here.
struct Fields<'a> {
    data: &'a [u8],
    at: usize,
}

/// A field's value by wire type.
enum FieldValue<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| format!("field of {n} bytes runs past the message"))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// The next `(field number, value)`, or `None` at the end.
    fn next_field(&mut self) -> std::result::Result<Option<(u64, FieldValue<'a>)>, String> {
        if self.at == self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => FieldValue::Varint(self.varint()?),
            1 => FieldValue::Fixed64(self.take(8)?.try_into().expect("8 bytes")),
            2 => {
                let n = self.varint()? as usize;
                FieldValue::Bytes(self.take(n)?)
            }
            5 => FieldValue::Fixed32(self.take(4)?.try_into().expect("4 bytes")),
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, value)))
    }
}

/// The scalars (`simple_value` summaries) of one `Event` payload.
fn decode_scalars(payload: &[u8], out: &mut Vec<ScalarEvent>) -> std::result::Result<(), String> {
    let (mut wall_time, mut step, mut summaries) = (0.0, 0i64, Vec::new());
    let mut event = Fields::new(payload);
    while let Some((field, value)) = event.next_field()? {
        match (field, value) {
            (1, FieldValue::Fixed64(b)) => wall_time = f64::from_le_bytes(b),
            (2, FieldValue::Varint(v)) => step = v as i64,
            (5, FieldValue::Bytes(b)) => summaries.push(b),
            _ => {}
        }
    }
    for summary in summaries {
        let mut s = Fields::new(summary);
        while let Some((field, value)) = s.next_field()? {
            let (1, FieldValue::Bytes(v)) = (field, value) else {
                continue;
            };
            let (mut tag, mut simple) = (String::new(), None);
            let mut v = Fields::new(v);
            while let Some((field, value)) = v.next_field()? {
                match (field, value) {
                    (1, FieldValue::Bytes(b)) => {
                        tag = String::from_utf8(b.to_vec()).map_err(|_| "tag is not UTF-8")?;
                    }
                    (2, FieldValue::Fixed32(b)) => simple = Some(f32::from_le_bytes(b)),
                    _ => {}
                }
            }
            if let Some(value) = simple {
                out.push(ScalarEvent {
                    wall_time,
                    step,
                    tag,
                    value,
                });
            }
        }
    }
    Ok(())
}

/// Reads every scalar of an event file (written by [`EventWriter`], TensorBoard's own
/// `SummaryWriter`, or PyTorch's), checking each record's CRCs.
pub fn read_scalars(path: impl AsRef<Path>) -> Result<Vec<ScalarEvent>> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let bad = |reason: String| Error::EventFile {
            path: path.to_path_buf(),
            offset: at,
            reason,
        };
        let header = data
            .get(at..at + 12)
            .ok_or_else(|| bad("truncated record header".into()))?;
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc(len_bytes) != u32::from_le_bytes(len_crc.try_into().expect("4 bytes")) {
            return Err(bad("length CRC mismatch".into()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let end = usize::try_from(len)
            .ok()
            .and_then(|n| (at + 12).checked_add(n))
            .filter(|&e| e + 4 <= data.len())
            .ok_or_else(|| bad(format!("a record of {len} bytes runs past the end")))?;
        let payload = &data[at + 12..end];
        let crc = u32::from_le_bytes(data[end..end + 4].try_into().expect("4 bytes"));
        if masked_crc(payload) != crc {
            return Err(bad("payload CRC mismatch".into()));
        }
        decode_scalars(payload, &mut out).map_err(bad)?;
        at = end + 4;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(Fields::new(&out).varint().unwrap(), v);
        }
    }

    #[test]
    fn scalars_round_trip_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path().join("tb")).unwrap();
        for (step, v) in [(1, 0.5f32), (2, 0.25), (300, -1.5)] {
            w.write_scalar("train/loss", step, v).unwrap();
        }
        w.write_scalar("val/mean_iou", 2, 0.75).unwrap();
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        assert!(path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("events.out.tfevents."));
        let read = read_scalars(&path).unwrap();
        let got: Vec<(&str, i64, f32)> = read
            .iter()
            .map(|s| (s.tag.as_str(), s.step, s.value))
            .collect();
        assert_eq!(
            got,
            vec![
                ("train/loss", 1, 0.5),
                ("train/loss", 2, 0.25),
                ("train/loss", 300, -1.5),
                ("val/mean_iou", 2, 0.75)
            ]
        );
        assert!(read.iter().all(|s| s.wall_time > 1.6e9));

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_scalars(&path).unwrap_err().to_string();
        assert!(err.contains("payload CRC mismatch"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let err = read_scalars(&path).unwrap_err().to_string();
        assert!(err.contains("runs past the end"), "{err}");
    }
}
