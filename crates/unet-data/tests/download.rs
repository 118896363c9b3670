//! The downloader against a local HTTP server on 127.0.0.1 that serves the mirror's layout
//! (`<dir>/<i>.png`). Nothing here reaches outside the machine.
#![cfg(feature = "download")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use unet_data::download::{fetch_stacks, FetchEvent, RemoteStack, ISBI_STACKS};
use unet_data::{encode_png_grey, pixel_sha256, read_u8_stack, write_stack, Error, Stack};

/// Serve `files` (URL path -> body) until the test process ends; returns the base URL.
fn serve(files: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let files = Arc::clone(&files);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).ok();
                // Skip the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                let (status, body) = match files.get(&path) {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).ok();
                stream.write_all(&body).ok();
            });
        }
    });
    format!("http://{addr}/mirror")
}

fn png_pages(files: &mut HashMap<String, Vec<u8>>, dir: &str, stack: &Stack<u8>) {
    for (i, page) in stack.iter_pages().enumerate() {
        let png = encode_png_grey(stack.height(), stack.width(), page).unwrap();
        files.insert(format!("/mirror/{dir}/{i}.png"), png);
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn synthetic() -> (Stack<u8>, RemoteStack, HashMap<String, Vec<u8>>) {
    let stack = Stack::new(3, 5, 7, (0..105).map(|v| (v * 7 % 256) as u8).collect()).unwrap();
    let mut files = HashMap::new();
    png_pages(&mut files, "imgs", &stack);
    let remote = RemoteStack {
        file: "synthetic.tif",
        remote_dir: "imgs",
        pages: 3,
        pixel_sha256: leak(pixel_sha256(&stack)),
    };
    (stack, remote, files)
}

#[test]
fn fetches_verifies_and_writes() {
    let (stack, remote, files) = synthetic();
    let url = serve(files);
    let dest = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    fetch_stacks(&url, dest.path(), &[remote], &mut |e| events.push(e)).unwrap();
    assert_eq!(
        read_u8_stack(dest.path().join("synthetic.tif")).unwrap(),
        stack
    );
    assert_eq!(
        events.first(),
        Some(&FetchEvent::Start {
            file: "synthetic.tif",
            pages: 3
        })
    );
    assert_eq!(
        events.last(),
        Some(&FetchEvent::Written {
            file: "synthetic.tif"
        })
    );
    // A second fetch finds the file and downloads nothing.
    events.clear();
    fetch_stacks(
        "http://127.0.0.1:9/unused",
        dest.path(),
        &[remote],
        &mut |e| events.push(e),
    )
    .unwrap();
    assert_eq!(
        events,
        vec![FetchEvent::AlreadyPresent {
            file: "synthetic.tif"
        }]
    );
}

#[test]
fn wrong_pixels_are_rejected_and_nothing_is_written() {
    let (_, mut remote, files) = synthetic();
    remote.pixel_sha256 = "00".repeat(32).leak();
    let url = serve(files);
    let dest = tempfile::tempdir().unwrap();
    let e = fetch_stacks(&url, dest.path(), &[remote], &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }), "{e:?}");
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0);
}

#[test]
fn a_missing_page_is_a_download_error() {
    let (_, remote, mut files) = synthetic();
    files.remove("/mirror/imgs/2.png");
    let url = serve(files);
    let dest = tempfile::tempdir().unwrap();
    let e = fetch_stacks(&url, dest.path(), &[remote], &mut |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("imgs/2.png") && msg.contains("404"), "{msg}");
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0);
}

#[test]
fn an_existing_file_with_other_pixels_is_never_overwritten() {
    let (_, remote, files) = synthetic();
    let url = serve(files);
    let dest = tempfile::tempdir().unwrap();
    let mine = Stack::new(1, 2, 2, vec![1u8, 2, 3, 4]).unwrap();
    write_stack(dest.path().join("synthetic.tif"), &mine).unwrap();
    let e = fetch_stacks(&url, dest.path(), &[remote], &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }), "{e:?}");
    assert_eq!(
        read_u8_stack(dest.path().join("synthetic.tif")).unwrap(),
        mine
    );
}

/// The real stacks, found by the project's one rule (`UNET_DATA`, else `data/isbi2012/`).
fn isbi_dir() -> PathBuf {
    unet_data::locate_data_dir(None)
        .unwrap_or_else(|e| panic!("the ISBI data is needed for this test: {e}"))
}

#[test]
fn fetches_the_real_isbi_layout() {
    let src = isbi_dir();
    let mut files = HashMap::new();
    for remote in ISBI_STACKS {
        png_pages(
            &mut files,
            remote.remote_dir,
            &read_u8_stack(src.join(remote.file)).unwrap(),
        );
    }
    let url = serve(files);
    let dest = tempfile::tempdir().unwrap();
    let mut pages = 0;
    fetch_stacks(&url, dest.path(), &ISBI_STACKS, &mut |e| {
        if let FetchEvent::Page { .. } = e {
            pages += 1
        }
    })
    .unwrap();
    assert_eq!(pages, 90);
    for remote in ISBI_STACKS {
        let a = read_u8_stack(src.join(remote.file)).unwrap();
        let b = read_u8_stack(dest.path().join(remote.file)).unwrap();
        assert!(a == b, "{} differs", remote.file);
    }
    let _ = Path::new("");
}
