//! A TCP stream that is plain or TLS (either side of the handshake).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection as the listeners and clients hold it. The TLS variants are
/// boxed: a rustls connection is about a kilobyte, a `TcpStream` a few words.
#[derive(Debug)]
pub enum MaybeTlsStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// The server side of a TLS connection (handshake done).
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The client side of a TLS connection (handshake done).
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl MaybeTlsStream {
    /// The underlying TCP stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTlsStream::Plain(s) => s,
            MaybeTlsStream::ServerTls(s) => s.get_ref().0,
            MaybeTlsStream::ClientTls(s) => s.get_ref().0,
        }
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Whether the stream runs over TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, MaybeTlsStream::Plain(_))
    }

    /// On the server side of TLS, `User:<CN>` of the verified client certificate.
    pub fn peer_principal(&self) -> Option<String> {
        match self {
            MaybeTlsStream::ServerTls(s) => crate::peer_principal(s.get_ref().1),
            _ => None,
        }
    }
}

impl From<TcpStream> for MaybeTlsStream {
    fn from(s: TcpStream) -> Self {
        MaybeTlsStream::Plain(s)
    }
}

impl From<tokio_rustls::server::TlsStream<TcpStream>> for MaybeTlsStream {
    fn from(s: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        MaybeTlsStream::ServerTls(Box::new(s))
    }
}

impl From<tokio_rustls::client::TlsStream<TcpStream>> for MaybeTlsStream {
    fn from(s: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        MaybeTlsStream::ClientTls(Box::new(s))
    }
}

/// Forwards one poll to whichever stream this is.
macro_rules! forward {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            MaybeTlsStream::Plain($s) => $e,
            MaybeTlsStream::ServerTls($s) => $e,
            MaybeTlsStream::ClientTls($s) => $e,
        }
    };
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        forward!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        forward!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        forward!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(s) => s.is_write_vectored(),
            MaybeTlsStream::ServerTls(s) => s.is_write_vectored(),
            MaybeTlsStream::ClientTls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
