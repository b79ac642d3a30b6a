//! A Zebra-class printer on its raw TCP port (9100): asks the host status
//! (`~HS`) and, if the printer is ready, sends the label on the same
//! connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{HostStatus, PrintError, PrintJob, Printer};

pub struct TcpPrinter {
    /// `host:port`.
    pub address: String,
    /// For connecting, and for each answer and write.
    pub timeout: Duration,
}

impl TcpPrinter {
    pub fn new(address: &str, timeout: Duration) -> TcpPrinter {
        TcpPrinter {
            address: address.to_string(),
            timeout,
        }
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> PrintError {
        PrintError::Unreachable {
            address: self.address.clone(),
            reason: reason.to_string(),
        }
    }

    async fn connect(&self) -> Result<TcpStream, PrintError> {
        match timeout(self.timeout, TcpStream::connect(&self.address)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(self.unreachable(e)),
            Err(_) => Err(self.unreachable(format!(
                "no connection after {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Sends `~HS` and reads the three strings back; a printer with a
    /// problem is an error.
    async fn status(&self, stream: &mut TcpStream) -> Result<(), PrintError> {
        let io = |e: std::io::Error| self.unreachable(e);
        timeout(self.timeout, stream.write_all(b"~HS\r\n"))
            .await
            .map_err(|_| self.unreachable("the printer does not take data"))?
            .map_err(io)?;
        let mut buf = Vec::new();
        let read = async {
            let mut chunk = [0u8; 512];
            while !HostStatus::complete(&buf) {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 4096 {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        };
        match timeout(self.timeout, read).await {
            Err(_) if buf.is_empty() => {
                return Err(PrintError::NoStatus {
                    address: self.address.clone(),
                });
            }
            Err(_) => {}
            Ok(r) => r.map_err(io)?,
        }
        if buf.is_empty() {
            return Err(self.unreachable("the printer closed the connection"));
        }
        let status = HostStatus::parse(&buf).map_err(|reason| PrintError::BadStatus {
            address: self.address.clone(),
            reason,
        })?;
        match status.problem(&self.address) {
            Some(p) => Err(p),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Printer for TcpPrinter {
    fn describe(&self) -> String {
        format!("tcp {}", self.address)
    }

    async fn check(&self) -> Result<(), PrintError> {
        let mut stream = self.connect().await?;
        self.status(&mut stream).await
    }

    async fn print(&self, job: &PrintJob) -> Result<(), PrintError> {
        let mut stream = self.connect().await?;
        self.status(&mut stream).await?;
        let send = async {
            stream.write_all(job.zpl.as_bytes()).await?;
            stream.flush().await?;
            stream.shutdown().await
        };
        timeout(self.timeout, send)
            .await
            .map_err(|_| self.unreachable("the printer stopped taking data"))?
            .map_err(|e| self.unreachable(e))
    }
}
