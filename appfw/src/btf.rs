//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`): only
//! what appfw needs, the byte offsets of struct members, so that the eBPF
//! programs can follow `task->mm->exe_file->f_inode` on this kernel build
//! without hard-coded offsets and without CO-RE (see [`crate::bpf`]).
//!
//! Format: <https://docs.kernel.org/bpf/btf.html>. A header, then a type
//! section (records of varying length, type ids counted from 1) and a
//! string section. Members of anonymous structs and unions are found
//! through them (e.g. `mm_struct`'s fields sit in an anonymous struct).

use std::{fs, path::Path};

use thiserror::Error;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error(
        "reading {path} failed: {reason}; appfw needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    Read { path: String, reason: String },
    #[error("the kernel BTF is malformed: {0}")]
    Malformed(String),
    #[error("the kernel BTF has no struct {0}; this kernel is not supported")]
    NoStruct(String),
    #[error(
        "the kernel BTF has no member {member} in struct {structure}; this kernel is not supported"
    )]
    NoMember { structure: String, member: String },
    #[error("member {structure}.{member} is a bit field; appfw needs a whole field")]
    BitField { structure: String, member: String },
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
/// Nesting of anonymous members followed at most (the kernel's deepest is
/// a handful; this only stops a malformed blob from looping).
const MAX_DEPTH: u32 = 16;

/// The parsed type and string sections.
pub struct Btf {
    data: Vec<u8>,
    /// Offset in `data` of type id `i + 1`.
    types: Vec<usize>,
    strings: usize,
    strings_len: usize,
}

struct Type {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// Offset in `data` of the first record after the common header.
    extra: usize,
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {off}")))
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = fs::read(path).map_err(|e| BtfError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Btf::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| BtfError::Malformed("empty".into()))?;
        if magic != MAGIC {
            return Err(BtfError::Malformed(format!(
                "magic {magic:#06x}, expected {MAGIC:#06x} (little-endian BTF)"
            )));
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings = hdr_len + str_off;
        if types_end > data.len() || strings + str_len > data.len() {
            return Err(BtfError::Malformed("sections run past the end".into()));
        }
        let mut btf = Btf {
            data,
            types: Vec::new(),
            strings,
            strings_len: str_len,
        };
        let mut off = types_start;
        while off < types_end {
            btf.types.push(off);
            let t = btf.type_at(off)?;
            off = t.extra + btf.extra_len(&t)?;
        }
        if off != types_end {
            return Err(BtfError::Malformed("type section ends mid-record".into()));
        }
        Ok(btf)
    }

    fn type_at(&self, off: usize) -> Result<Type, BtfError> {
        let info = u32_at(&self.data, off + 4)?;
        Ok(Type {
            name_off: u32_at(&self.data, off)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 != 0,
            extra: off + 12,
        })
    }

    /// Bytes that follow the 12-byte common header of a type of this kind.
    fn extra_len(&self, t: &Type) -> Result<usize, BtfError> {
        Ok(match t.kind {
            // INT
            1 => 4,
            // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            2 | 7..=12 | 16 | 18 => 0,
            // ARRAY
            3 => 12,
            // STRUCT, UNION, DATASEC, ENUM64
            4 | 5 | 15 | 19 => 12 * t.vlen,
            // ENUM, FUNC_PROTO
            6 | 13 => 8 * t.vlen,
            // VAR, DECL_TAG
            14 | 17 => 4,
            k => return Err(BtfError::Malformed(format!("unknown type kind {k}"))),
        })
    }

    fn name(&self, off: u32) -> Result<&str, BtfError> {
        let start = off as usize;
        if start >= self.strings_len {
            return Err(BtfError::Malformed(format!(
                "string offset {off} out of range"
            )));
        }
        let bytes = &self.data[self.strings + start..self.strings + self.strings_len];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end])
            .map_err(|_| BtfError::Malformed(format!("string at {off} is not UTF-8")))
    }

    fn by_id(&self, id: u32) -> Result<Type, BtfError> {
        let off = id
            .checked_sub(1)
            .and_then(|i| self.types.get(i as usize))
            .ok_or_else(|| BtfError::Malformed(format!("type id {id} out of range")))?;
        self.type_at(*off)
    }

    /// Byte offset of `member` in `struct structure`, looking into
    /// anonymous struct and union members.
    pub fn member_offset(&self, structure: &str, member: &str) -> Result<u32, BtfError> {
        let mut found_struct = false;
        for &off in &self.types {
            let t = self.type_at(off)?;
            // A declaration without members (vlen 0) is not the definition.
            if t.kind != KIND_STRUCT || t.vlen == 0 || self.name(t.name_off)? != structure {
                continue;
            }
            found_struct = true;
            if let Some(bits) = self.find_member(&t, member, 0)? {
                if bits % 8 != 0 {
                    return Err(BtfError::BitField {
                        structure: structure.into(),
                        member: member.into(),
                    });
                }
                return Ok(bits / 8);
            }
        }
        if found_struct {
            Err(BtfError::NoMember {
                structure: structure.into(),
                member: member.into(),
            })
        } else {
            Err(BtfError::NoStruct(structure.into()))
        }
    }

    /// Bit offset of `member` in the struct or union `t`, if it has it.
    fn find_member(&self, t: &Type, member: &str, depth: u32) -> Result<Option<u32>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::Malformed(
                "anonymous members nest too deep".into(),
            ));
        }
        for i in 0..t.vlen {
            let m = t.extra + 12 * i;
            let name_off = u32_at(&self.data, m)?;
            let type_id = u32_at(&self.data, m + 4)?;
            let raw = u32_at(&self.data, m + 8)?;
            // With kind_flag the top 8 bits are a bit-field size.
            let bits = if t.kind_flag { raw & 0x00ff_ffff } else { raw };
            if name_off == 0 {
                let inner = self.by_id(type_id)?;
                if inner.kind == KIND_STRUCT || inner.kind == KIND_UNION {
                    if let Some(b) = self.find_member(&inner, member, depth + 1)? {
                        return Ok(Some(bits + b));
                    }
                }
                continue;
            }
            if self.name(name_off)? == member {
                return Ok(Some(bits));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF blobs for tests.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                strings: vec![0],
                next_id: 1,
                ..Builder::default()
            }
        }
        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        fn header(&mut self, name: &str, kind: u32, vlen: u32, flag: bool, size: u32) -> u32 {
            let n = self.string(name);
            let info = (u32::from(flag) << 31) | (kind << 24) | vlen;
            for v in [n, info, size] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        fn int(&mut self, name: &str) -> u32 {
            let id = self.header(name, 1, 0, false, 8);
            self.types.extend_from_slice(&64u32.to_le_bytes());
            id
        }
        fn ptr(&mut self, to: u32) -> u32 {
            self.header("", 2, 0, false, to)
        }
        /// members: (name, type id, bit offset word as stored).
        fn compound(
            &mut self,
            kind: u32,
            name: &str,
            flag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let id = self.header(name, kind, members.len() as u32, flag, 64);
            for &(m, ty, off) in members {
                let n = self.string(m);
                for v in [n, ty, off] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
            id
        }
        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(1);
            out.push(0);
            let tl = self.types.len() as u32;
            for v in [24u32, 0, tl, tl, self.strings.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn sample() -> Btf {
        let mut b = Builder::new();
        let long = b.int("long");
        let p = b.ptr(long);
        // A forward declaration first: must be skipped.
        b.header("task_struct", 7, 0, false, 0);
        let inner = b.compound(
            KIND_STRUCT,
            "",
            false,
            &[("exe_file", p, 64), ("arg_start", long, 128)],
        );
        let un = b.compound(
            KIND_UNION,
            "",
            false,
            &[("a", long, 0), ("u_member", long, 0)],
        );
        b.compound(
            KIND_STRUCT,
            "mm_struct",
            false,
            &[("count", long, 0), ("", inner, 256), ("", un, 512)],
        );
        // kind_flag set: offsets carry a bit-field size in the top byte.
        b.compound(
            KIND_STRUCT,
            "task_struct",
            true,
            &[("flags", long, (3 << 24) | 5), ("mm", p, 1136 * 8)],
        );
        Btf::parse(b.build()).unwrap()
    }

    #[test]
    fn direct_and_anonymous_members() {
        let btf = sample();
        assert_eq!(btf.member_offset("mm_struct", "count"), Ok(0));
        assert_eq!(btf.member_offset("mm_struct", "exe_file"), Ok(32 + 8));
        assert_eq!(btf.member_offset("mm_struct", "arg_start"), Ok(32 + 16));
        assert_eq!(btf.member_offset("mm_struct", "u_member"), Ok(64));
        assert_eq!(btf.member_offset("task_struct", "mm"), Ok(1136));
    }

    #[test]
    fn missing_and_bit_field_members_are_errors() {
        let btf = sample();
        assert_eq!(
            btf.member_offset("inode", "i_ino"),
            Err(BtfError::NoStruct("inode".into()))
        );
        assert!(matches!(
            btf.member_offset("mm_struct", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("task_struct", "flags"),
            Err(BtfError::BitField { .. })
        ));
    }

    #[test]
    fn malformed_blobs_are_refused() {
        assert!(Btf::parse(vec![]).is_err());
        assert!(Btf::parse(vec![0x9f, 0xeb, 1, 0]).is_err());
        let mut blob = sample_blob();
        blob.truncate(blob.len() - 10);
        assert!(Btf::parse(blob).is_err());
        let mut b = Builder::new();
        b.header("x", 31, 0, false, 0);
        assert!(matches!(Btf::parse(b.build()), Err(BtfError::Malformed(_))));
    }

    fn sample_blob() -> Vec<u8> {
        let mut b = Builder::new();
        let long = b.int("long");
        b.compound(KIND_STRUCT, "s", false, &[("m", long, 0)]);
        b.build()
    }

    /// The running kernel's BTF, when it has one: the offsets appfw needs
    /// all exist, lie inside plausible bounds, and agree with each other
    /// (mm_struct's arg_end follows arg_start).
    #[test]
    fn running_kernel_offsets() {
        let path = Path::new(VMLINUX);
        if !path.exists() {
            panic!("{VMLINUX} is missing: this machine's kernel lacks BTF, which appfw needs");
        }
        let btf = Btf::from_file(path).unwrap();
        let offsets = crate::identity::kernel_offsets(&btf).unwrap();
        eprintln!("{:?}", crate::identity::offset_values(&offsets));
        assert_eq!(offsets.mm_arg_end, offsets.mm_arg_start + 8);
        for (name, v) in crate::identity::offset_values(&offsets) {
            assert!(v < 16384, "{name} = {v}");
        }
    }
}
