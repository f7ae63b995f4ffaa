//! File API: streaming PutFile and GetFile (102400-byte chunks, as Layotto), ListFile, DelFile,
//! GetFileMeta.

use std::pin::Pin;

use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Status, Streaming};

use super::status::{component, store};
use super::Shared;
use crate::runtime::proto::rt;

/// Size of each GetFile chunk.
pub const CHUNK: usize = 102_400;

/// The GetFile response stream.
pub type FileStream = Pin<Box<dyn Stream<Item = Result<rt::GetFileResponse, Status>> + Send>>;

/// `GetFile`.
pub async fn get(s: &Shared, r: rt::GetFileRequest) -> Result<FileStream, Status> {
    let fs = store(&s.components.files, &r.store_name, "file")?.clone();
    let what = format!("GetFile {} from file store {}", r.name, r.store_name);
    let mut f = fs.open(&r.name).await.map_err(|e| component(e, &what))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match f.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    let msg = rt::GetFileResponse {
                        data: buf[..n].to_vec(),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::internal(format!("{what}: {e}")))).await;
                    break;
                }
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// `PutFile`: the first message names the store and file; the file appears only once complete.
pub async fn put(s: &Shared, mut input: Streaming<rt::PutFileRequest>) -> Result<(), Status> {
    let first = input
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("PutFile stream is empty"))?;
    let fs = store(&s.components.files, &first.store_name, "file")?;
    let what = format!("PutFile {} to file store {}", first.name, first.store_name);
    let (mut f, tmp, path) = fs
        .create(&first.name)
        .await
        .map_err(|e| component(e, &what))?;
    // Removes the partial file however this ends (an error, or the client going away, which
    // drops this future) unless the upload is committed.
    let mut part = PartFile(Some(tmp.clone()));
    let result = async {
        f.write_all(&first.data).await?;
        while let Some(m) = input.message().await.map_err(std::io::Error::other)? {
            f.write_all(&m.data).await?;
        }
        f.flush().await?;
        f.sync_all().await
    }
    .await;
    if let Err(e) = result {
        return Err(Status::internal(format!("{what}: {e}")));
    }
    fs.commit(&tmp, &path)
        .await
        .map_err(|e| component(e, &what))?;
    part.0 = None;
    Ok(())
}

/// A partial upload, deleted on drop unless taken.
struct PartFile(Option<std::path::PathBuf>);

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `ListFile`: `request.name` is the directory.
pub async fn list(s: &Shared, r: rt::ListFileRequest) -> Result<rt::ListFileResp, Status> {
    let req = r.request.unwrap_or_default();
    let fs = store(&s.components.files, &req.store_name, "file")?;
    let what = format!("ListFile {} in file store {}", req.name, req.store_name);
    let size = usize::try_from(r.page_size).unwrap_or(0);
    let (page, marker, truncated) = fs
        .list(&req.name, size, &r.marker)
        .await
        .map_err(|e| component(e, &what))?;
    Ok(rt::ListFileResp {
        files: page
            .into_iter()
            .map(|e| rt::FileInfo {
                file_name: e.name,
                size: e.size,
                last_modified: e.last_modified,
                metadata: Default::default(),
            })
            .collect(),
        marker,
        is_truncated: truncated,
    })
}

/// `DelFile`.
pub async fn delete(s: &Shared, r: rt::DelFileRequest) -> Result<(), Status> {
    let req = r.request.unwrap_or_default();
    let fs = store(&s.components.files, &req.store_name, "file")?;
    let what = format!("DelFile {} in file store {}", req.name, req.store_name);
    fs.delete(&req.name).await.map_err(|e| component(e, &what))
}

/// `GetFileMeta`.
pub async fn meta(
    s: &Shared,
    r: rt::GetFileMetaRequest,
) -> Result<rt::GetFileMetaResponse, Status> {
    let req = r.request.unwrap_or_default();
    let fs = store(&s.components.files, &req.store_name, "file")?;
    let what = format!("GetFileMeta {} in file store {}", req.name, req.store_name);
    let m = fs.meta(&req.name).await.map_err(|e| component(e, &what))?;
    Ok(rt::GetFileMetaResponse {
        size: m.size,
        last_modified: m.last_modified,
        response: Some(rt::FileMeta::default()),
    })
}
