//! The protobuf codec of synod's gRPC services: prost's, except that a message that does
//! not decode is `InvalidArgument` rather than `Internal`.
//!
//! A request that is not valid protobuf is the sender's mistake, and a client that retries
//! on `Internal` would only send it again. (etcd, through grpc-go, answers `Internal`; no
//! etcd client depends on that code.)

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

#[derive(Debug, Clone)]
pub struct SynodCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for SynodCodec<T, U> {
    fn default() -> Self {
        SynodCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for SynodCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = InvalidArgumentDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        InvalidArgumentDecoder(self.0.decoder())
    }
}

/// prost's decoder with decode failures reported as `InvalidArgument`.
#[derive(Debug, Clone)]
pub struct InvalidArgumentDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for InvalidArgumentDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!("malformed protobuf message: {}", status.message()))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
