/// The on-disk ELF layout in one place: numeric constants and the byte offsets of every field of
/// every structure Suture reads, for both classes (ELF32 and ELF64, little-endian only).
///
/// Nothing here checks bounds: `ByteReader` checks a whole entry once, then these decoders read its
/// fields. The friendly model (`Section`, `Symbol`, ...) is built from these raw values.
/// Field offsets follow the System V gABI (and `/usr/include/elf.h`).

/// Numeric constants from the gABI, under their C names so they can be looked up in `elf.h`.
public enum ELFConstants {
    // e_ident
    public static let ELFCLASS32: UInt8 = 1
    public static let ELFCLASS64: UInt8 = 2
    public static let ELFDATA2LSB: UInt8 = 1
    public static let ELFDATA2MSB: UInt8 = 2
    public static let EV_CURRENT: UInt8 = 1

    // Special section indexes
    public static let SHN_UNDEF: UInt32 = 0
    public static let SHN_LORESERVE: UInt32 = 0xff00
    public static let SHN_ABS: UInt32 = 0xfff1
    public static let SHN_COMMON: UInt32 = 0xfff2
    public static let SHN_XINDEX: UInt32 = 0xffff
    /// e_phnum value meaning "the real count is in section 0's sh_info".
    public static let PN_XNUM: UInt16 = 0xffff

    // sh_type
    public static let SHT_NULL: UInt32 = 0
    public static let SHT_PROGBITS: UInt32 = 1
    public static let SHT_SYMTAB: UInt32 = 2
    public static let SHT_STRTAB: UInt32 = 3
    public static let SHT_RELA: UInt32 = 4
    public static let SHT_HASH: UInt32 = 5
    public static let SHT_DYNAMIC: UInt32 = 6
    public static let SHT_NOTE: UInt32 = 7
    public static let SHT_NOBITS: UInt32 = 8
    public static let SHT_REL: UInt32 = 9
    public static let SHT_DYNSYM: UInt32 = 11
    public static let SHT_INIT_ARRAY: UInt32 = 14
    public static let SHT_FINI_ARRAY: UInt32 = 15
    public static let SHT_PREINIT_ARRAY: UInt32 = 16
    public static let SHT_GROUP: UInt32 = 17
    public static let SHT_SYMTAB_SHNDX: UInt32 = 18
    public static let SHT_RELR: UInt32 = 19
    public static let SHT_GNU_HASH: UInt32 = 0x6fff_fff6
    public static let SHT_GNU_VERDEF: UInt32 = 0x6fff_fffd
    public static let SHT_GNU_VERNEED: UInt32 = 0x6fff_fffe
    public static let SHT_GNU_VERSYM: UInt32 = 0x6fff_ffff

    // sh_flags
    public static let SHF_WRITE: UInt64 = 0x1
    public static let SHF_ALLOC: UInt64 = 0x2
    public static let SHF_EXECINSTR: UInt64 = 0x4
    public static let SHF_MERGE: UInt64 = 0x10
    public static let SHF_STRINGS: UInt64 = 0x20
    public static let SHF_INFO_LINK: UInt64 = 0x40
    public static let SHF_LINK_ORDER: UInt64 = 0x80
    public static let SHF_OS_NONCONFORMING: UInt64 = 0x100
    public static let SHF_GROUP: UInt64 = 0x200
    public static let SHF_TLS: UInt64 = 0x400
    public static let SHF_COMPRESSED: UInt64 = 0x800
    public static let SHF_GNU_RETAIN: UInt64 = 0x20_0000
    public static let SHF_EXCLUDE: UInt64 = 0x8000_0000

    // p_type
    public static let PT_NULL: UInt32 = 0
    public static let PT_LOAD: UInt32 = 1
    public static let PT_DYNAMIC: UInt32 = 2
    public static let PT_INTERP: UInt32 = 3
    public static let PT_NOTE: UInt32 = 4
    public static let PT_SHLIB: UInt32 = 5
    public static let PT_PHDR: UInt32 = 6
    public static let PT_TLS: UInt32 = 7
    public static let PT_GNU_EH_FRAME: UInt32 = 0x6474_e550
    public static let PT_GNU_STACK: UInt32 = 0x6474_e551
    public static let PT_GNU_RELRO: UInt32 = 0x6474_e552
    public static let PT_GNU_PROPERTY: UInt32 = 0x6474_e553

    // p_flags
    public static let PF_X: UInt32 = 0x1
    public static let PF_W: UInt32 = 0x2
    public static let PF_R: UInt32 = 0x4

    // st_info
    public static let STT_NOTYPE: UInt8 = 0
    public static let STT_OBJECT: UInt8 = 1
    public static let STT_FUNC: UInt8 = 2
    public static let STT_SECTION: UInt8 = 3
    public static let STT_FILE: UInt8 = 4
    public static let STT_COMMON: UInt8 = 5
    public static let STT_TLS: UInt8 = 6
    public static let STT_GNU_IFUNC: UInt8 = 10
    public static let STB_LOCAL: UInt8 = 0
    public static let STB_GLOBAL: UInt8 = 1
    public static let STB_WEAK: UInt8 = 2
    public static let STB_GNU_UNIQUE: UInt8 = 10

    // Note types (owner "GNU")
    public static let NT_GNU_BUILD_ID: UInt32 = 3
}

/// ELF32 or ELF64: decides the width of addresses and the layout of every table.
public enum ELFClass: Sendable, Hashable {
    case elf32, elf64
}

/// Byte offsets and sizes of the on-disk structures, per class.
enum Raw {
    // MARK: File header (Elf32_Ehdr / Elf64_Ehdr)

    static let identSize = 16

    struct FileHeader {
        var elfClass: ELFClass
        var osABI: UInt8
        var abiVersion: UInt8
        var type: UInt16
        var machine: UInt16
        var version: UInt32
        var entry: UInt64
        var programHeaderOffset: UInt64
        var sectionHeaderOffset: UInt64
        var flags: UInt32
        var headerSize: UInt16
        var programHeaderEntrySize: UInt16
        var programHeaderCount: UInt16
        var sectionHeaderEntrySize: UInt16
        var sectionHeaderCount: UInt16
        var sectionNameTableIndex: UInt16

        static func size(_ c: ELFClass) -> Int { c == .elf64 ? 64 : 52 }

        /// `at` must have been checked for `size(c)` bytes.
        init(_ r: ByteReader, at o: Int, class c: ELFClass) {
            elfClass = c
            osABI = r.u8(o + 7)
            abiVersion = r.u8(o + 8)
            type = r.u16(o + 16)
            machine = r.u16(o + 18)
            version = r.u32(o + 20)
            if c == .elf64 {
                entry = r.u64(o + 24)
                programHeaderOffset = r.u64(o + 32)
                sectionHeaderOffset = r.u64(o + 40)
                flags = r.u32(o + 48)
                headerSize = r.u16(o + 52)
                programHeaderEntrySize = r.u16(o + 54)
                programHeaderCount = r.u16(o + 56)
                sectionHeaderEntrySize = r.u16(o + 58)
                sectionHeaderCount = r.u16(o + 60)
                sectionNameTableIndex = r.u16(o + 62)
            } else {
                entry = UInt64(r.u32(o + 24))
                programHeaderOffset = UInt64(r.u32(o + 28))
                sectionHeaderOffset = UInt64(r.u32(o + 32))
                flags = r.u32(o + 36)
                headerSize = r.u16(o + 40)
                programHeaderEntrySize = r.u16(o + 42)
                programHeaderCount = r.u16(o + 44)
                sectionHeaderEntrySize = r.u16(o + 46)
                sectionHeaderCount = r.u16(o + 48)
                sectionNameTableIndex = r.u16(o + 50)
            }
        }
    }

    // MARK: Section header (Elf32_Shdr / Elf64_Shdr)

    struct SectionHeader {
        var name: UInt32
        var type: UInt32
        var flags: UInt64
        var address: UInt64
        var offset: UInt64
        var size: UInt64
        var link: UInt32
        var info: UInt32
        var alignment: UInt64
        var entrySize: UInt64

        static func size(_ c: ELFClass) -> Int { c == .elf64 ? 64 : 40 }

        init(_ r: ByteReader, at o: Int, class c: ELFClass) {
            name = r.u32(o)
            type = r.u32(o + 4)
            if c == .elf64 {
                flags = r.u64(o + 8)
                address = r.u64(o + 16)
                offset = r.u64(o + 24)
                size = r.u64(o + 32)
                link = r.u32(o + 40)
                info = r.u32(o + 44)
                alignment = r.u64(o + 48)
                entrySize = r.u64(o + 56)
            } else {
                flags = UInt64(r.u32(o + 8))
                address = UInt64(r.u32(o + 12))
                offset = UInt64(r.u32(o + 16))
                size = UInt64(r.u32(o + 20))
                link = r.u32(o + 24)
                info = r.u32(o + 28)
                alignment = UInt64(r.u32(o + 32))
                entrySize = UInt64(r.u32(o + 36))
            }
        }
    }

    // MARK: Program header (Elf32_Phdr / Elf64_Phdr); note p_flags moves between classes

    struct ProgramHeader {
        var type: UInt32
        var flags: UInt32
        var offset: UInt64
        var virtualAddress: UInt64
        var physicalAddress: UInt64
        var fileSize: UInt64
        var memorySize: UInt64
        var alignment: UInt64

        static func size(_ c: ELFClass) -> Int { c == .elf64 ? 56 : 32 }

        init(_ r: ByteReader, at o: Int, class c: ELFClass) {
            type = r.u32(o)
            if c == .elf64 {
                flags = r.u32(o + 4)
                offset = r.u64(o + 8)
                virtualAddress = r.u64(o + 16)
                physicalAddress = r.u64(o + 24)
                fileSize = r.u64(o + 32)
                memorySize = r.u64(o + 40)
                alignment = r.u64(o + 48)
            } else {
                offset = UInt64(r.u32(o + 4))
                virtualAddress = UInt64(r.u32(o + 8))
                physicalAddress = UInt64(r.u32(o + 12))
                fileSize = UInt64(r.u32(o + 16))
                memorySize = UInt64(r.u32(o + 20))
                flags = r.u32(o + 24)
                alignment = UInt64(r.u32(o + 28))
            }
        }
    }

    // MARK: Symbol (Elf32_Sym / Elf64_Sym); the field order differs between classes

    struct Symbol {
        var name: UInt32
        var info: UInt8
        var other: UInt8
        var sectionIndex: UInt16
        var value: UInt64
        var size: UInt64

        static func size(_ c: ELFClass) -> Int { c == .elf64 ? 24 : 16 }

        init(_ r: ByteReader, at o: Int, class c: ELFClass) {
            name = r.u32(o)
            if c == .elf64 {
                info = r.u8(o + 4)
                other = r.u8(o + 5)
                sectionIndex = r.u16(o + 6)
                value = r.u64(o + 8)
                size = r.u64(o + 16)
            } else {
                value = UInt64(r.u32(o + 4))
                size = UInt64(r.u32(o + 8))
                info = r.u8(o + 12)
                other = r.u8(o + 13)
                sectionIndex = r.u16(o + 14)
            }
        }
    }

    // MARK: Relocation (Elf{32,64}_Rel / Elf{32,64}_Rela)

    struct Relocation {
        var offset: UInt64
        var symbol: UInt32
        var type: UInt32
        var addend: Int64

        static func size(_ c: ELFClass, explicitAddend: Bool) -> Int {
            switch (c, explicitAddend) {
            case (.elf64, true): return 24
            case (.elf64, false): return 16
            case (.elf32, true): return 12
            case (.elf32, false): return 8
            }
        }

        /// r_info packs symbol and type: ELF64 as sym<<32 | type, ELF32 as sym<<8 | (type & 0xff).
        init(_ r: ByteReader, at o: Int, class c: ELFClass, explicitAddend: Bool) {
            if c == .elf64 {
                offset = r.u64(o)
                let info = r.u64(o + 8)
                symbol = UInt32(truncatingIfNeeded: info >> 32)
                type = UInt32(truncatingIfNeeded: info)
                addend = explicitAddend ? Int64(bitPattern: r.u64(o + 16)) : 0
            } else {
                offset = UInt64(r.u32(o))
                let info = r.u32(o + 4)
                symbol = info >> 8
                type = info & 0xff
                addend = explicitAddend ? Int64(Int32(bitPattern: r.u32(o + 8))) : 0
            }
        }
    }

    // MARK: Note header (Elf32_Nhdr and Elf64_Nhdr are the same three 32-bit words)

    struct NoteHeader {
        var nameSize: UInt32
        var descriptorSize: UInt32
        var type: UInt32

        static let size = 12

        init(_ r: ByteReader, at o: Int) {
            nameSize = r.u32(o)
            descriptorSize = r.u32(o + 4)
            type = r.u32(o + 8)
        }
    }
}
