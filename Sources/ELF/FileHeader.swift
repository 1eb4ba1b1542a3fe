/// The ELF file header (`Elf64_Ehdr` / `Elf32_Ehdr`) in friendly form.
public struct FileHeader: Sendable, Hashable {
    public var elfClass: ELFClass
    public var osABI: UInt8
    public var abiVersion: UInt8
    public var type: FileType
    public var machine: Machine
    public var version: UInt32
    public var entry: UInt64
    public var flags: UInt32
    public var programHeaderOffset: UInt64
    public var sectionHeaderOffset: UInt64
    /// The real counts, after extended numbering (e_shnum == 0, e_phnum == PN_XNUM) is resolved.
    public var programHeaderCount: Int
    public var sectionHeaderCount: Int
    public var sectionNameTableIndex: Int

    /// Width of an address in bytes (4 or 8).
    public var addressSize: Int { elfClass == .elf64 ? 8 : 4 }
}

/// `e_machine`. Only the architectures Suture disassembles have names; any value is representable.
public struct Machine: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let i386 = Machine(rawValue: 3)
    public static let x86_64 = Machine(rawValue: 62)
    public static let aarch64 = Machine(rawValue: 183)

    public var description: String {
        switch self {
        case .i386: return "i386"
        case .x86_64: return "x86-64"
        case .aarch64: return "AArch64"
        default: return "machine \(rawValue)"
        }
    }
}

/// `e_type`.
public enum FileType: Sendable, Hashable, CustomStringConvertible {
    case relocatable, executable, sharedObject, core, other(UInt16)

    public init(rawValue: UInt16) {
        switch rawValue {
        case 1: self = .relocatable
        case 2: self = .executable
        case 3: self = .sharedObject
        case 4: self = .core
        default: self = .other(rawValue)
        }
    }

    public var rawValue: UInt16 {
        switch self {
        case .relocatable: return 1
        case .executable: return 2
        case .sharedObject: return 3
        case .core: return 4
        case .other(let value): return value
        }
    }

    public var description: String {
        switch self {
        case .relocatable: return "relocatable"
        case .executable: return "executable"
        case .sharedObject: return "shared object"
        case .core: return "core"
        case .other(let value): return "type \(value)"
        }
    }
}
