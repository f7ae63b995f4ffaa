//! The protobuf codec of the runtime's gRPC services: tonic's prost codec with a smaller
//! starting buffer.
//!
//! tonic allocates one buffer to decode a call's request and one to encode its response, 8 KiB
//! each by default, so every call in flight holds 16 KiB. Runtime messages are mostly far
//! smaller (a GetState request is about 20 bytes). Starting at 1 KiB, the largest block glibc
//! caches per thread, a call holds 2 KiB and its buffers stay on malloc's fast path; larger
//! messages grow the buffer as before.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, ProstCodec};

/// Starting size of the encode and decode buffers: the largest glibc caches per thread.
const BUFFER_SIZE: usize = 1024;
/// tonic's default: how much a streaming encoder buffers before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// tonic's [`tonic::codec::ProstCodec`] with [`BUFFER_SIZE`] buffers (named by `build.rs` as
/// the codec of the runtime API's generated services and clients).
#[derive(Debug, Clone, Copy)]
pub struct RuntimeCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for RuntimeCodec<T, U> {
    fn default() -> Self {
        RuntimeCodec(PhantomData)
    }
}

impl<T, U> Codec for RuntimeCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
