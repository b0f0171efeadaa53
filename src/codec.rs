//! The one byte codec every encoder in stampede writes with: log payloads
//! (the engine's changes, the key store's answers), the engine's
//! checkpoint image. Little-endian integers; short strings (identifiers:
//! at most 255 bytes) as a u8 length and the bytes; byte strings as a u32
//! length and the bytes.
//!
//! Writing appends to a `Vec<u8>` ([`Put`]); a string too long for its
//! length prefix is an error, never a truncation. Reading ([`Reader`])
//! never panics and never reads past its slice, whatever the bytes.

/// What is wrong with bytes being written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("cut short")]
    Short,
    #[error("a string of {len} bytes is over the 255-byte limit")]
    StringTooLong { len: usize },
    #[error("a byte string of {len} bytes is over the 4 GiB limit")]
    BytesTooLong { len: usize },
    #[error("a string is not UTF-8")]
    Utf8,
    /// The bytes decode but make no sense (an unknown tag, a value out of
    /// range, bytes left over).
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// Decoders that explain damage in words (checkpoint restore, replay).
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

/// Appending values to a byte buffer.
pub trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_u128(&mut self, v: u128);
    /// A u8 length, then the bytes.
    fn put_str(&mut self, s: &str) -> Result<(), Error>;
    /// A u32 length, then the bytes.
    fn put_bytes(&mut self, b: &[u8]) -> Result<(), Error>;
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }

    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_u128(&mut self, v: u128) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_str(&mut self, s: &str) -> Result<(), Error> {
        let len = u8::try_from(s.len()).map_err(|_| Error::StringTooLong { len: s.len() })?;
        self.push(len);
        self.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn put_bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        let len = u32::try_from(b.len()).map_err(|_| Error::BytesTooLong { len: b.len() })?;
        self.put_u32(len);
        self.extend_from_slice(b);
        Ok(())
    }
}

/// Reading values back from a slice, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Every byte was read: anything left over is malformed.
    pub fn finish(&self) -> Result<(), Error> {
        match self.bytes.is_empty() {
            true => Ok(()),
            false => Err(Error::Malformed("bytes left over")),
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.bytes.len() < n {
            return Err(Error::Short);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Error> {
        self.array().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Result<u32, Error> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, Error> {
        self.array().map(u64::from_le_bytes)
    }

    pub fn u128(&mut self) -> Result<u128, Error> {
        self.array().map(u128::from_le_bytes)
    }

    pub fn str(&mut self) -> Result<&'a str, Error> {
        let len = usize::from(self.u8()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| Error::Utf8)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A u8 flag: 0 for `None`, 1 for `Some(str)`.
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, Error> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(Error::Malformed("an option flag is not 0 or 1")),
        }
    }
}

/// Writes an optional string as [`Reader::opt_str`] reads it.
pub fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) -> Result<(), Error> {
    match s {
        None => {
            out.put_u8(0);
            Ok(())
        }
        Some(s) => {
            out.put_u8(1);
            out.put_str(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_short_input_is_an_error() {
        let mut out = Vec::new();
        out.put_u8(1);
        out.put_u16(2);
        out.put_u32(3);
        out.put_u64(4);
        out.put_u128(5);
        out.put_str("hot-1").unwrap();
        out.put_bytes(b"body").unwrap();
        put_opt_str(&mut out, Some("o")).unwrap();
        put_opt_str(&mut out, None).unwrap();
        let mut r = Reader::new(&out);
        assert_eq!(
            (r.u8(), r.u16(), r.u32(), r.u64(), r.u128()),
            (Ok(1), Ok(2), Ok(3), Ok(4), Ok(5))
        );
        assert_eq!(r.str(), Ok("hot-1"));
        assert_eq!(r.bytes(), Ok(&b"body"[..]));
        assert_eq!((r.opt_str(), r.opt_str()), (Ok(Some("o")), Ok(None)));
        assert_eq!(r.finish(), Ok(()));
        for cut in 0..out.len() {
            let mut r = Reader::new(&out[..cut]);
            let all = (|| {
                r.u8()?;
                r.u16()?;
                r.u32()?;
                r.u64()?;
                r.u128()?;
                r.str()?;
                r.bytes()?;
                r.opt_str()?;
                r.opt_str()
            })();
            assert_eq!(all, Err(Error::Short), "cut at {cut}");
        }
        assert_eq!(
            Vec::new().put_str(&"x".repeat(256)),
            Err(Error::StringTooLong { len: 256 })
        );
    }
}
