//! WASI preview1 error numbers (`errno` in `typenames.witx`, a `u16` enum in declaration order).

use core::fmt;

/// An error number exactly as WASI preview1 defines it: `errno as u16` is the value a WASI call
/// returns to the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Errno {
    /// No error occurred.
    Success = 0,
    /// Argument list too long.
    TooBig = 1,
    /// Permission denied.
    Acces = 2,
    /// Address in use.
    Addrinuse = 3,
    /// Address not available.
    Addrnotavail = 4,
    /// Address family not supported.
    Afnosupport = 5,
    /// Resource unavailable, or operation would block.
    Again = 6,
    /// Connection already in progress.
    Already = 7,
    /// Bad file descriptor.
    Badf = 8,
    /// Bad message.
    Badmsg = 9,
    /// Device or resource busy.
    Busy = 10,
    /// Operation canceled.
    Canceled = 11,
    /// No child processes.
    Child = 12,
    /// Connection aborted.
    Connaborted = 13,
    /// Connection refused.
    Connrefused = 14,
    /// Connection reset.
    Connreset = 15,
    /// Resource deadlock would occur.
    Deadlk = 16,
    /// Destination address required.
    Destaddrreq = 17,
    /// Mathematics argument out of domain of function.
    Dom = 18,
    /// Reserved.
    Dquot = 19,
    /// File exists.
    Exist = 20,
    /// Bad address.
    Fault = 21,
    /// File too large.
    Fbig = 22,
    /// Host is unreachable.
    Hostunreach = 23,
    /// Identifier removed.
    Idrm = 24,
    /// Illegal byte sequence.
    Ilseq = 25,
    /// Operation in progress.
    Inprogress = 26,
    /// Interrupted function.
    Intr = 27,
    /// Invalid argument.
    Inval = 28,
    /// I/O error.
    Io = 29,
    /// Socket is connected.
    Isconn = 30,
    /// Is a directory.
    Isdir = 31,
    /// Too many levels of symbolic links.
    Loop = 32,
    /// File descriptor value too large.
    Mfile = 33,
    /// Too many links.
    Mlink = 34,
    /// Message too large.
    Msgsize = 35,
    /// Reserved.
    Multihop = 36,
    /// Filename too long.
    Nametoolong = 37,
    /// Network is down.
    Netdown = 38,
    /// Connection aborted by network.
    Netreset = 39,
    /// Network unreachable.
    Netunreach = 40,
    /// Too many files open in system.
    Nfile = 41,
    /// No buffer space available.
    Nobufs = 42,
    /// No such device.
    Nodev = 43,
    /// No such file or directory.
    Noent = 44,
    /// Executable file format error.
    Noexec = 45,
    /// No locks available.
    Nolck = 46,
    /// Reserved.
    Nolink = 47,
    /// Not enough space.
    Nomem = 48,
    /// No message of the desired type.
    Nomsg = 49,
    /// Protocol not available.
    Noprotoopt = 50,
    /// No space left on device.
    Nospc = 51,
    /// Function not supported.
    Nosys = 52,
    /// The socket is not connected.
    Notconn = 53,
    /// Not a directory.
    Notdir = 54,
    /// Directory not empty.
    Notempty = 55,
    /// State not recoverable.
    Notrecoverable = 56,
    /// Not a socket.
    Notsock = 57,
    /// Not supported.
    Notsup = 58,
    /// Inappropriate I/O control operation.
    Notty = 59,
    /// No such device or address.
    Nxio = 60,
    /// Value too large to be stored in data type.
    Overflow = 61,
    /// Previous owner died.
    Ownerdead = 62,
    /// Operation not permitted.
    Perm = 63,
    /// Broken pipe.
    Pipe = 64,
    /// Protocol error.
    Proto = 65,
    /// Protocol not supported.
    Protonosupport = 66,
    /// Protocol wrong type for socket.
    Prototype = 67,
    /// Result too large.
    Range = 68,
    /// Read-only file system.
    Rofs = 69,
    /// Invalid seek.
    Spipe = 70,
    /// No such process.
    Srch = 71,
    /// Reserved.
    Stale = 72,
    /// Connection timed out.
    Timedout = 73,
    /// Text file busy.
    Txtbsy = 74,
    /// Cross-device link.
    Xdev = 75,
    /// Capabilities insufficient (WASI extension).
    Notcapable = 76,
}

impl Errno {
    /// Every error number, indexed by its value.
    pub const ALL: [Errno; 77] = [
        Errno::Success,
        Errno::TooBig,
        Errno::Acces,
        Errno::Addrinuse,
        Errno::Addrnotavail,
        Errno::Afnosupport,
        Errno::Again,
        Errno::Already,
        Errno::Badf,
        Errno::Badmsg,
        Errno::Busy,
        Errno::Canceled,
        Errno::Child,
        Errno::Connaborted,
        Errno::Connrefused,
        Errno::Connreset,
        Errno::Deadlk,
        Errno::Destaddrreq,
        Errno::Dom,
        Errno::Dquot,
        Errno::Exist,
        Errno::Fault,
        Errno::Fbig,
        Errno::Hostunreach,
        Errno::Idrm,
        Errno::Ilseq,
        Errno::Inprogress,
        Errno::Intr,
        Errno::Inval,
        Errno::Io,
        Errno::Isconn,
        Errno::Isdir,
        Errno::Loop,
        Errno::Mfile,
        Errno::Mlink,
        Errno::Msgsize,
        Errno::Multihop,
        Errno::Nametoolong,
        Errno::Netdown,
        Errno::Netreset,
        Errno::Netunreach,
        Errno::Nfile,
        Errno::Nobufs,
        Errno::Nodev,
        Errno::Noent,
        Errno::Noexec,
        Errno::Nolck,
        Errno::Nolink,
        Errno::Nomem,
        Errno::Nomsg,
        Errno::Noprotoopt,
        Errno::Nospc,
        Errno::Nosys,
        Errno::Notconn,
        Errno::Notdir,
        Errno::Notempty,
        Errno::Notrecoverable,
        Errno::Notsock,
        Errno::Notsup,
        Errno::Notty,
        Errno::Nxio,
        Errno::Overflow,
        Errno::Ownerdead,
        Errno::Perm,
        Errno::Pipe,
        Errno::Proto,
        Errno::Protonosupport,
        Errno::Prototype,
        Errno::Range,
        Errno::Rofs,
        Errno::Spipe,
        Errno::Srch,
        Errno::Stale,
        Errno::Timedout,
        Errno::Txtbsy,
        Errno::Xdev,
        Errno::Notcapable,
    ];

    /// The value a WASI call returns.
    pub const fn raw(self) -> u16 {
        self as u16
    }

    /// The error number with value `raw`, if WASI preview1 defines one.
    pub fn from_raw(raw: u16) -> Option<Errno> {
        Self::ALL.get(usize::from(raw)).copied()
    }

    /// The witx name, e.g. `"noent"`.
    pub const fn name(self) -> &'static str {
        NAMES[self as usize]
    }
}

const NAMES: [&str; 77] = [
    "success",
    "2big",
    "acces",
    "addrinuse",
    "addrnotavail",
    "afnosupport",
    "again",
    "already",
    "badf",
    "badmsg",
    "busy",
    "canceled",
    "child",
    "connaborted",
    "connrefused",
    "connreset",
    "deadlk",
    "destaddrreq",
    "dom",
    "dquot",
    "exist",
    "fault",
    "fbig",
    "hostunreach",
    "idrm",
    "ilseq",
    "inprogress",
    "intr",
    "inval",
    "io",
    "isconn",
    "isdir",
    "loop",
    "mfile",
    "mlink",
    "msgsize",
    "multihop",
    "nametoolong",
    "netdown",
    "netreset",
    "netunreach",
    "nfile",
    "nobufs",
    "nodev",
    "noent",
    "noexec",
    "nolck",
    "nolink",
    "nomem",
    "nomsg",
    "noprotoopt",
    "nospc",
    "nosys",
    "notconn",
    "notdir",
    "notempty",
    "notrecoverable",
    "notsock",
    "notsup",
    "notty",
    "nxio",
    "overflow",
    "ownerdead",
    "perm",
    "pipe",
    "proto",
    "protonosupport",
    "prototype",
    "range",
    "rofs",
    "spipe",
    "srch",
    "stale",
    "timedout",
    "txtbsy",
    "xdev",
    "notcapable",
];

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("E")?;
        for c in self.name().chars() {
            write!(f, "{}", c.to_ascii_uppercase())?;
        }
        Ok(())
    }
}
