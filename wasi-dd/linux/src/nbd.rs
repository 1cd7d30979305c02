//! The NBD transmission protocol as Linux's `nbd` driver speaks it over the socket it is given
//! with `NBD_SET_SOCK` (no handshake: the size and flags are set by ioctl). All integers are big
//! endian.
//!
//! A request is 28 bytes: magic `0x25609513` (u32), command flags (u16), type (u16), handle
//! (u64, echoed in the reply), offset (u64), length (u32); a write is followed by `length` bytes
//! of data. A reply is 16 bytes: magic `0x67446698`, error (u32, an errno value, 0 for
//! success), handle; a successful read's reply is followed by `length` bytes of data. Replies
//! may come in any order.

/// `NBD_REQUEST_MAGIC`.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_REPLY_MAGIC` (simple replies).
pub const REPLY_MAGIC: u32 = 0x6744_6698;
pub const REQUEST_BYTES: usize = 28;
pub const REPLY_BYTES: usize = 16;

/// Transmission flags for `NBD_SET_FLAGS`: the flags field is meaningful, and flushes are
/// sent (without `SEND_FLUSH` Linux never asks for one and the disk's cache is never written
/// back before a disconnect).
pub const FLAG_HAS_FLAGS: u64 = 1 << 0;
pub const FLAG_SEND_FLUSH: u64 = 1 << 2;

/// The largest write payload accepted (Linux's nbd sends at most 32 MiB at once).
pub const MAX_PAYLOAD: u32 = 64 << 20;

/// errno values a reply carries.
pub mod errno {
    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    pub const ENOMEM: u32 = 12;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
    pub const ESHUTDOWN: u32 = 108;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Read,
    Write,
    /// The client is going away: no reply, close the connection after the requests in flight.
    Disconnect,
    Flush,
    /// Anything else (trim, write-zeroes, ...): not advertised, answered with `EINVAL`.
    Other(u16),
}

impl Command {
    fn from_wire(value: u16) -> Command {
        match value {
            0 => Command::Read,
            1 => Command::Write,
            2 => Command::Disconnect,
            3 => Command::Flush,
            other => Command::Other(other),
        }
    }

    fn to_wire(self) -> u16 {
        match self {
            Command::Read => 0,
            Command::Write => 1,
            Command::Disconnect => 2,
            Command::Flush => 3,
            Command::Other(other) => other,
        }
    }
}

/// One request, with the data of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub flags: u16,
    pub handle: u64,
    pub offset: u64,
    pub length: u32,
    pub data: Vec<u8>,
}

/// The peer broke the protocol: the connection cannot continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    BadMagic(u32),
    PayloadTooLarge(u32),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::BadMagic(magic) => write!(f, "request magic {magic:#010x}"),
            ProtocolError::PayloadTooLarge(length) => {
                write!(f, "a {length}-byte write (at most {MAX_PAYLOAD})")
            }
        }
    }
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().unwrap_or_default())
}

fn be64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().unwrap_or_default())
}

/// Collects bytes from the socket and cuts them into requests.
#[derive(Default)]
pub struct RequestReader {
    buffer: Vec<u8>,
    start: usize,
}

impl RequestReader {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete request, if its header (and a write's data) has arrived.
    pub fn next_request(&mut self) -> Result<Option<Request>, ProtocolError> {
        let pending = &self.buffer[self.start..];
        if pending.len() < REQUEST_BYTES {
            self.compact();
            return Ok(None);
        }
        let magic = be32(&pending[0..]);
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::BadMagic(magic));
        }
        let flags = u16::from_be_bytes([pending[4], pending[5]]);
        let command = Command::from_wire(u16::from_be_bytes([pending[6], pending[7]]));
        let handle = be64(&pending[8..]);
        let offset = be64(&pending[16..]);
        let length = be32(&pending[24..]);
        let payload = if command == Command::Write {
            if length > MAX_PAYLOAD {
                return Err(ProtocolError::PayloadTooLarge(length));
            }
            length as usize
        } else {
            0
        };
        if pending.len() < REQUEST_BYTES + payload {
            self.compact();
            return Ok(None);
        }
        let data = pending[REQUEST_BYTES..REQUEST_BYTES + payload].to_vec();
        self.start += REQUEST_BYTES + payload;
        Ok(Some(Request {
            command,
            flags,
            handle,
            offset,
            length,
            data,
        }))
    }

    /// Drops the bytes already parsed (so the buffer does not grow without end).
    fn compact(&mut self) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
    }
}

/// The 16-byte reply header.
pub fn reply_header(handle: u64, error: u32) -> [u8; REPLY_BYTES] {
    let mut bytes = [0u8; REPLY_BYTES];
    bytes[0..4].copy_from_slice(&REPLY_MAGIC.to_be_bytes());
    bytes[4..8].copy_from_slice(&error.to_be_bytes());
    bytes[8..16].copy_from_slice(&handle.to_be_bytes());
    bytes
}

/// A request as the kernel sends it (for tests, and to document the layout).
pub fn encode_request(
    command: Command,
    handle: u64,
    offset: u64,
    length: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(REQUEST_BYTES + data.len());
    bytes.extend(REQUEST_MAGIC.to_be_bytes());
    bytes.extend(0u16.to_be_bytes());
    bytes.extend(command.to_wire().to_be_bytes());
    bytes.extend(handle.to_be_bytes());
    bytes.extend(offset.to_be_bytes());
    bytes.extend(length.to_be_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Reads a reply header: `(error, handle)`, or `None` if the magic is wrong.
pub fn parse_reply(bytes: &[u8; REPLY_BYTES]) -> Option<(u32, u64)> {
    (be32(&bytes[0..]) == REPLY_MAGIC).then(|| (be32(&bytes[4..]), be64(&bytes[8..])))
}

/// Where a read or write lands on a disk of `sector_count` sectors of `sector_size` bytes:
/// the first sector and the number of sectors, or the errno to answer with.
pub fn sectors_of(
    offset: u64,
    length: u32,
    sector_size: u32,
    sector_count: u64,
) -> Result<(u64, u64), u32> {
    let size = u64::from(sector_size);
    if size == 0 || !offset.is_multiple_of(size) || !u64::from(length).is_multiple_of(size) {
        return Err(errno::EINVAL);
    }
    let lba = offset / size;
    let count = u64::from(length) / size;
    match lba.checked_add(count) {
        Some(end) if end <= sector_count => Ok((lba, count)),
        _ => Err(errno::ENOSPC),
    }
}

/// Splits `count` sectors from `lba` into requests of at most `max` sectors:
/// `(lba, count, offset of the chunk in the transfer in sectors)`.
pub fn chunks(lba: u64, count: u64, max: u64) -> impl Iterator<Item = (u64, u32, u64)> {
    let max = max.clamp(1, u64::from(u32::MAX));
    (0..count.div_ceil(max)).map(move |i| {
        let done = i * max;
        (lba + done, (count - done).min(max) as u32, done)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_the_reader_in_pieces() {
        let mut wire = encode_request(Command::Write, 0x1122_3344_5566_7788, 4096, 4, b"abcd");
        wire.extend(encode_request(Command::Read, 7, 512, 1024, &[]));
        wire.extend(encode_request(Command::Flush, 8, 0, 0, &[]));
        wire.extend(encode_request(Command::Disconnect, 9, 0, 0, &[]));
        let mut reader = RequestReader::default();
        let mut requests = Vec::new();
        // One byte at a time: every split point of headers and payloads.
        for byte in &wire {
            reader.feed(std::slice::from_ref(byte));
            while let Some(request) = reader.next_request().unwrap() {
                requests.push(request);
            }
        }
        assert_eq!(
            requests,
            vec![
                Request {
                    command: Command::Write,
                    flags: 0,
                    handle: 0x1122_3344_5566_7788,
                    offset: 4096,
                    length: 4,
                    data: b"abcd".to_vec(),
                },
                Request {
                    command: Command::Read,
                    flags: 0,
                    handle: 7,
                    offset: 512,
                    length: 1024,
                    data: Vec::new(),
                },
                Request {
                    command: Command::Flush,
                    flags: 0,
                    handle: 8,
                    offset: 0,
                    length: 0,
                    data: Vec::new(),
                },
                Request {
                    command: Command::Disconnect,
                    flags: 0,
                    handle: 9,
                    offset: 0,
                    length: 0,
                    data: Vec::new(),
                },
            ]
        );
        assert!(reader.buffer.is_empty(), "parsed bytes are dropped");
    }

    #[test]
    fn the_wire_layout_is_big_endian_as_linux_sends_it() {
        let wire = encode_request(Command::Read, 0x0102_0304_0506_0708, 0x200, 0x1000, &[]);
        assert_eq!(
            wire,
            [
                0x25, 0x60, 0x95, 0x13, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 2, 0,
                0, 0, 0x10, 0
            ]
        );
        let reply = reply_header(0x0102_0304_0506_0708, errno::EIO);
        assert_eq!(
            reply,
            [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(
            parse_reply(&reply),
            Some((errno::EIO, 0x0102_0304_0506_0708))
        );
    }

    #[test]
    fn broken_streams_are_protocol_errors() {
        let mut reader = RequestReader::default();
        let mut wire = encode_request(Command::Read, 1, 0, 512, &[]);
        wire[0] = 0;
        reader.feed(&wire);
        assert_eq!(
            reader.next_request(),
            Err(ProtocolError::BadMagic(0x0060_9513))
        );
        let mut reader = RequestReader::default();
        reader.feed(&encode_request(Command::Write, 1, 0, MAX_PAYLOAD + 1, &[]));
        assert_eq!(
            reader.next_request(),
            Err(ProtocolError::PayloadTooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn other_commands_parse_without_a_payload() {
        let mut reader = RequestReader::default();
        reader.feed(&encode_request(Command::Other(4), 3, 0, 1 << 20, &[]));
        let request = reader.next_request().unwrap().unwrap();
        assert_eq!(request.command, Command::Other(4));
        assert!(request.data.is_empty());
    }

    #[test]
    fn transfers_map_to_sectors_or_errors() {
        assert_eq!(sectors_of(4096, 1024, 512, 100), Ok((8, 2)));
        assert_eq!(sectors_of(0, 0, 512, 100), Ok((0, 0)));
        assert_eq!(sectors_of(99 * 512, 512, 512, 100), Ok((99, 1)));
        assert_eq!(sectors_of(99 * 512, 1024, 512, 100), Err(errno::ENOSPC));
        assert_eq!(
            sectors_of(u64::MAX - 511, 512, 512, 100),
            Err(errno::ENOSPC)
        );
        assert_eq!(sectors_of(100, 512, 512, 100), Err(errno::EINVAL));
        assert_eq!(sectors_of(0, 100, 512, 100), Err(errno::EINVAL));
        assert_eq!(sectors_of(0, 4096, 0, 100), Err(errno::EINVAL));
    }

    #[test]
    fn long_transfers_split_into_chunks() {
        assert_eq!(
            chunks(10, 5, 2).collect::<Vec<_>>(),
            vec![(10, 2, 0), (12, 2, 2), (14, 1, 4)]
        );
        assert_eq!(chunks(0, 4, 8).collect::<Vec<_>>(), vec![(0, 4, 0)]);
        assert_eq!(chunks(0, 0, 8).count(), 0);
        assert_eq!(chunks(0, 3, 0).count(), 3, "a max of 0 is taken as 1");
    }
}
