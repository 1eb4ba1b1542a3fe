import ELF
import Symbols

/// The addresses of the few kernel symbols the targets need: where to read the kernel's identity
/// and the values that translate virtual to physical addresses. They come from the live kernel's
/// symbol table (`/proc/kallsyms` of the guest, or System.map), so KASLR is already applied.
public struct KernelSymbols: Sendable, Hashable {
    /// `linux_banner`: "Linux version 6.1.0-56-amd64 (…) …".
    public var linuxBanner: UInt64?
    /// `__start_notes` / `__stop_notes`: the kernel's ELF notes, holding its GNU build-id.
    public var startNotes: UInt64?
    public var stopNotes: UInt64?
    /// The address of the `phys_base` variable (its value is phys(_text) − (_text − __START_KERNEL_map)).
    public var physBase: UInt64?
    /// The address of the `page_offset_base` variable (the direct map's start, randomized by KASLR).
    public var pageOffsetBase: UInt64?

    public init(linuxBanner: UInt64? = nil, startNotes: UInt64? = nil, stopNotes: UInt64? = nil,
                physBase: UInt64? = nil, pageOffsetBase: UInt64? = nil) {
        self.linuxBanner = linuxBanner
        self.startNotes = startNotes
        self.stopNotes = stopNotes
        self.physBase = physBase
        self.pageOffsetBase = pageOffsetBase
    }

    /// Looks each symbol up by name (`linux_banner`, `__start_notes`, `__stop_notes`, `phys_base`,
    /// `page_offset_base`) through any symbol table.
    public init(lookup: (String) -> UInt64?) {
        self.init(linuxBanner: lookup("linux_banner"), startNotes: lookup("__start_notes"),
                  stopNotes: lookup("__stop_notes"), physBase: lookup("phys_base"),
                  pageOffsetBase: lookup("page_offset_base"))
    }

    /// The symbols from a kernel symbol table (the live kernel's kallsyms, or System.map). Module
    /// symbols are ignored: these all live in the kernel image.
    public init(index: SymbolIndex) {
        self.init { name in index.symbols(named: name).first { $0.module == nil }?.address }
    }

    /// `__START_KERNEL_map`: kernel text is mapped at this virtual address plus its physical address
    /// minus `phys_base` (x86-64).
    public static let startKernelMap: UInt64 = 0xffff_ffff_8000_0000
    /// Where the module area begins (MODULES_VADDR): the kernel image lies below it.
    public static let modulesStart: UInt64 = 0xffff_ffff_c000_0000

    /// Reads the kernel's identity through `read`: the banner (and the release in it) and the GNU
    /// build-id from the notes. Throws when neither symbol is known: an identity that knows nothing
    /// would match every kernel.
    func identity(target: String, read: (UInt64, Int) throws -> [UInt8]) throws -> TargetIdentity {
        guard linuxBanner != nil || (startNotes != nil && stopNotes != nil) else {
            throw TargetError.missingSymbol(target: target, name: "linux_banner",
                                            purpose: "the kernel's identity (or __start_notes and __stop_notes)")
        }
        var identity = TargetIdentity(kind: .kernel)
        if let banner = linuxBanner {
            // The banner is a NUL-terminated string of about 150 bytes; read in steps so a read never
            // runs far past it.
            var text: [UInt8] = []
            var address = banner
            while text.count < 1024 {
                let chunk = try read(address, 256)
                if let nul = chunk.firstIndex(of: 0) {
                    text += chunk[..<nul]
                    break
                }
                text += chunk
                address += 256
            }
            var string = String(decoding: text, as: UTF8.self)
            while string.hasSuffix("\n") { string.removeLast() }
            identity.banner = string
            identity.release = Self.release(fromBanner: string)
        }
        if let start = startNotes, let stop = stopNotes, stop > start {
            guard stop - start <= 1 << 16 else {
                throw TargetError.malformedELF(file: target, structure: "kernel notes (__start_notes…__stop_notes)",
                                               offset: start, expected: "at most 64 KiB", found: "\(stop - start) bytes")
            }
            let bytes = try read(start, Int(stop - start))
            let notes = try MemoryNotes.parse(bytes, source: "\(target) kernel notes", address: start)
            identity.buildID = MemoryNotes.buildID(in: notes)
        }
        return identity
    }

    /// `6.1.0-56-amd64` from "Linux version 6.1.0-56-amd64 (debian-kernel@…) …".
    static func release(fromBanner banner: String) -> String? {
        let words = banner.split(separator: " ", maxSplits: 3)
        guard words.count >= 3, words[0] == "Linux", words[1] == "version" else { return nil }
        return String(words[2])
    }
}
