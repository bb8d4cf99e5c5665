//! A minimal blocking HTTP/1.1 client for the load generator and the server scenario: keep-alive,
//! Content-Length and chunked bodies, streamed bodies for Server-Sent Events. Only what the
//! benchmarks need; it talks to the Docker API (unix sockets) and `berth serve` (loopback TCP).

use std::io::{self, BufRead, BufReader, Read, Write};

use anyhow::{Context, bail};

/// One connection (any byte stream), reused across requests (keep-alive).
pub struct Conn<S: Read + Write> {
    r: BufReader<S>,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// How a response body is framed.
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

impl<S: Read + Write> Conn<S> {
    pub fn new(stream: S) -> Self {
        Conn {
            r: BufReader::with_capacity(64 * 1024, stream),
        }
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<()> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let mut buf = req.into_bytes();
        if let Some(b) = body {
            buf.extend_from_slice(b);
        }
        let w = self.r.get_mut();
        w.write_all(&buf)?;
        w.flush()
    }

    /// Reads the status line and headers; returns the status and the body framing.
    fn head(&mut self, method: &str) -> anyhow::Result<(u16, Framing)> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            bail!("connection closed before a response");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut framing = Framing::UntilClose;
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                bail!("connection closed in headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    framing = Framing::Length(v.parse().context("content-length")?);
                } else if k.eq_ignore_ascii_case("transfer-encoding")
                    && v.eq_ignore_ascii_case("chunked")
                {
                    framing = Framing::Chunked;
                }
            }
        }
        if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
            framing = Framing::Length(0);
        }
        Ok((status, framing))
    }

    /// One request and its whole response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> anyhow::Result<Response> {
        self.send(method, path, headers, body)?;
        let (status, framing) = self.head(method)?;
        let mut body = Vec::new();
        match framing {
            Framing::Length(n) => {
                (&mut self.r).take(n).read_to_end(&mut body)?;
                if body.len() as u64 != n {
                    bail!("short body");
                }
            }
            Framing::Chunked => {
                Chunked::new(&mut self.r).read_to_end(&mut body)?;
            }
            Framing::UntilClose => {
                self.r.read_to_end(&mut body)?;
            }
        }
        Ok(Response { status, body })
    }

    /// Starts a request whose body is read as a stream (Server-Sent Events): returns the status
    /// and a buffered reader of the decoded body.
    pub fn stream(
        mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Box<dyn BufRead + Send>)>
    where
        S: Send + 'static,
    {
        self.send("GET", path, headers, None)?;
        let (status, framing) = self.head("GET")?;
        let body: Box<dyn BufRead + Send> = match framing {
            Framing::Chunked => Box::new(BufReader::new(Chunked::new(self.r))),
            Framing::Length(n) => Box::new(BufReader::new(self.r.take(n))),
            Framing::UntilClose => Box::new(self.r),
        };
        Ok((status, body))
    }
}

/// Decodes a chunked body.
struct Chunked<R: BufRead> {
    r: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(r: R) -> Self {
        Chunked {
            r,
            left: 0,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.r.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk.
                line.clear();
                self.r.read_line(&mut line)?;
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = u64::from_str_radix(size, 16).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {line:?}"))
            })?;
            if self.left == 0 {
                // Trailers end with an empty line.
                loop {
                    line.clear();
                    if self.r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left as usize);
        let n = self.r.read(&mut buf[..n])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}
