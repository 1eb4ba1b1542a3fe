import ArgumentParser
import Disassembly
import ELF
import Foundation
import Symbols

/// `suture disasm FILE SYMBOL`: one function of an ELF file, laid out like `objdump -dr`;
/// `suture disasm -t TARGET EXPR`: the same from live memory.
struct DisasmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disasm",
        abstract: "Disassemble one function of a .o, .ko, vmlinux or program, like objdump -dr.",
        discussion: """
            SYMBOL is a name or an address expression: nfs_flock, nfs_flock/2 (the 2nd of that name), \
            "nfs_flock [nfs]", nfs_flock+0x2f (the function containing it). Relocations are shown under \
            the instructions they patch; branch targets as <symbol+offset>. A stripped vmlinux has no \
            symbols: give --kallsyms or --system-map to find the function (its bytes are read at that \
            address, less the KASLR slide measured at _text).
            With -t, the function is read from a live target instead: suture disasm -t lab "nfs_flock [nfs]".
            """)

    @Argument(help: ArgumentHelp("The ELF file (.o, .ko, .ko.xz, vmlinux, a program); with -t, the function.", valueName: "file"))
    var file: String

    @Argument(help: ArgumentHelp("The function: a name or an address expression.", valueName: "symbol"))
    var symbol: String?

    @Option(name: [.short, .long], help: ArgumentHelp("Disassemble live memory of this target (lab, gdb:HOST:PORT, pid:N, ...).", valueName: "target"))
    var target: String?

    @Option(name: .customLong("state-dir"), help: .hidden)
    var stateDirectory: String?

    @Flag(name: .long, help: "Intel syntax instead of AT&T.")
    var intel = false

    @Option(name: .long, help: ArgumentHelp("Find the symbol in a kallsyms file (for a stripped vmlinux).", valueName: "file"))
    var kallsyms: String?

    @Option(name: .customLong("system-map"), help: ArgumentHelp("Find the symbol in a System.map.", valueName: "file"))
    var systemMap: String?

    func validate() throws {
        guard kallsyms == nil || systemMap == nil else { throw ValidationError("give at most one of --kallsyms, --system-map") }
        guard (target == nil) != (symbol == nil) else {
            throw ValidationError(target == nil ? "give FILE and SYMBOL, or -t TARGET and the function" : "with -t give only the function")
        }
    }

    func run() throws {
        if let target { return try live(target: target, expression: file) }
        guard let symbol else { return }
        try running("disasm") {
            let map = try SymbolMap.load(kallsyms: kallsyms, systemMap: systemMap)
            let code = try FunctionCode(path: file, expression: symbol, map: map)
            let disassembler = try Disassembler(architecture: code.architecture, syntax: intel ? .intel : .att)
            let instructions = disassembler.decode(code.bytes, address: code.start)
            let listing = Listing(instructions: instructions,
                                  addressWidth: Listing.objdumpAddressWidth(sectionEnd: code.sectionEnd),
                                  symbolize: code.symbolize, annotations: try code.relocationAnnotations(),
                                  architecture: code.architecture)
            var header = Hex.padded(code.start, width: code.file.header.elfClass == .elf64 ? 16 : 8)
                + " <\(code.function.name)>:"
            if code.slide != 0 {
                header += "    (file address \(Hex.address(code.start &- UInt64(bitPattern: code.slide))), "
                    + "KASLR slide \(Hex.address(UInt64(bitPattern: code.slide))))"
            }
            print(header)
            print(listing.render(), terminator: "")
        }
    }

    /// Reads the function containing `expression` from the live target and lists it, branch
    /// targets symbolised through the target's symbols.
    private func live(target: String, expression: String) throws {
        try running("disasm") {
            var arguments = ["-t", target]
            if let kallsyms { arguments += ["--kallsyms", kallsyms] }
            if let systemMap { arguments += ["--system-map", systemMap] }
            let session = try TargetOptions.parse(arguments).open(access: .read)
            let place = try session.resolve(expression)
            guard let function = session.symbols?.function(containing: place.address), let size = function.size else {
                throw CommandFailure("\(expression): no function symbol with a size covers \(Hex.address(place.address))")
            }
            let bytes = try session.target.read(at: function.address, count: Int(size))
            let disassembler = try Disassembler(architecture: .x86_64, syntax: intel ? .intel : .att)
            let instructions = disassembler.decode(bytes, address: function.address)
            let listing = Listing(instructions: instructions, addressWidth: 16, symbolize: { address in
                guard let found = session.symbols?.symbolize(address) else { return nil }
                return found.offset == 0 ? found.symbol.name : found.symbol.name + "+" + Hex.address(found.offset)
            }, annotations: [:], architecture: .x86_64)
            let module = function.module.map { " [\($0)]" } ?? ""
            print(Hex.padded(function.address) + " <\(function.name)>\(module):    (live, \(session.name))")
            print(listing.render(), terminator: "")
        }
    }
}

/// A symbol map given on the command line (kallsyms or System.map), with where it came from.
struct SymbolMap {
    var index: SymbolIndex
    var path: String
    var kind: String

    static func load(kallsyms: String?, systemMap: String?) throws -> SymbolMap? {
        if let kallsyms {
            return SymbolMap(index: try SymbolSources.kallsyms(kallsyms),
                             path: kallsyms, kind: "kallsyms")
        }
        if let systemMap {
            return SymbolMap(index: try SymbolSources.systemMap(systemMap),
                             path: systemMap, kind: "System.map")
        }
        return nil
    }
}

/// One function's machine code in an ELF file, found by an address expression, with what a listing
/// needs: its section, its bytes, the relocations that patch it, and a symboliser.
///
/// Addresses are section offsets in relocatable files (.o, .ko), link-time addresses in linked ones,
/// and the map's addresses when the function was found through a kallsyms or System.map.
struct FunctionCode {
    let file: ELFFile
    let architecture: Architecture
    /// The function containing the expression's address.
    let function: SymbolRecord
    /// The expression's address and its offset into `function`.
    let address: UInt64
    let offset: UInt64
    let section: Section
    let start: UInt64
    let bytes: ByteView
    /// Where the addresses shown lie relative to the file's own (a kallsyms of a KASLR kernel).
    let slide: Int64
    let index: SymbolIndex
    let relocatable: Bool

    var size: UInt64 { UInt64(bytes.count) }
    var end: UInt64 { start + size }
    /// The section's end in the addresses shown (for objdump's address column width).
    var sectionEnd: UInt64 { section.address &+ section.size &+ UInt64(bitPattern: slide) }
    /// The file offset of the function's first byte.
    var fileOffset: UInt64 { bytes.fileOffset }
    /// The section name of relocatable objects' symbols, nil otherwise.
    var symbolSection: String? { relocatable ? section.name : nil }

    /// `map` places the function when given; with `mapOnlyWhenStripped`, only when the file has no
    /// symbols of its own.
    init(path: String, expression text: String, map givenMap: SymbolMap?, mapOnlyWhenStripped: Bool = false) throws {
        let file = try ELFFile(path: path)
        var map = givenMap
        if mapOnlyWhenStripped, map != nil {
            let hasOwnSymbols = try !file.symbols().isEmpty
            if file.header.type == .relocatable || hasOwnSymbols { map = nil }
        }
        guard let architecture = Architecture(machine: file.header.machine) else {
            throw CommandFailure("\(path): machine \(file.header.machine) is not one Suture decodes (x86-64, i386, AArch64)")
        }
        let relocatable = file.header.type == .relocatable
        if relocatable && map != nil {
            throw CommandFailure("\(path) is a relocatable object: its own symbols place its code, so drop "
                                 + "--kallsyms/--system-map (`suture locate` maps it to live addresses)")
        }
        let index = try map?.index ?? SymbolIndex(elf: file, module: SymbolSources.moduleName(ofObject: path))
        guard index.count > 0 else {
            throw CommandFailure("\(path) has no symbols (stripped): give --kallsyms or --system-map to find \(text)")
        }
        let expression = try AddressExpression.parse(text)
        if relocatable, case .absolute = expression.base {
            throw CommandFailure("\(text): a relocatable object's code has no addresses yet; name a symbol (nfs_flock+0x2f)")
        }
        let resolved = try expression.resolve(in: index)
        let place = resolved.symbol?.section
        guard let function = resolved.symbol.flatMap({ $0.isFunction ? $0 : nil })
                ?? index.function(containing: resolved.address, section: place) else {
            throw CommandFailure("\(text) (\(Hex.address(resolved.address))) is in no function of \(map?.path ?? path)")
        }
        guard let size = function.size, size > 0 else {
            throw CommandFailure("\(function.name) at \(Hex.address(function.address)): its size is unknown "
                                 + "(the last symbol of \(map?.path ?? path))")
        }
        guard size <= 1 << 24 else {
            throw CommandFailure("\(function.name): size \(Hex.address(size)) is not a function's (over 16 MiB)")
        }

        // The map's addresses may be a KASLR kernel's: _text (or _stext) against the file's .text.
        var slide: Int64 = 0
        if let map, !relocatable, let text = file.section(named: ".text") {
            for anchor in ["_text", "_stext"] {
                if let live = map.index.symbols(named: anchor).first(where: { $0.module == nil }) {
                    slide = Int64(bitPattern: live.address &- text.address)
                    break
                }
            }
        }

        let section: Section
        let bytes: ByteView
        if relocatable {
            guard let name = function.section, let found = file.section(named: name) else {
                throw CommandFailure("\(function.name): no section \(function.section ?? "?") in \(path)")
            }
            section = found
            let data = try file.data(of: section)
            guard function.address <= UInt64(data.count), size <= UInt64(data.count) - function.address else {
                throw CommandFailure("\(function.name) (\(Hex.address(function.address)), size \(Hex.address(size))) "
                                     + "runs past the end of \(name) (\(Hex.address(UInt64(data.count))) bytes) in \(path)")
            }
            bytes = try data.view(offset: Int(function.address), count: Int(size))
        } else {
            let fileAddress = function.address &- UInt64(bitPattern: slide)
            bytes = try file.bytes(atAddress: fileAddress, count: Int(size))
            guard let found = file.sections.first(where: {
                $0.isAllocated && $0.size > 0 && fileAddress >= $0.address && fileAddress - $0.address < $0.size
            }) else {
                throw CommandFailure("\(function.name) at \(Hex.address(fileAddress)) lies in no section of \(path)")
            }
            section = found
        }
        self.file = file
        self.architecture = architecture
        self.function = function
        self.address = resolved.address
        self.offset = resolved.address - function.address
        self.section = section
        self.start = function.address
        self.bytes = bytes
        self.slide = slide
        self.index = index
        self.relocatable = relocatable
    }

    /// `nfs_flock+0x6a` for an address, like objdump's `<...>`: the containing symbol, or this
    /// function when the address is its end (a `jmp` to the next function's padding).
    func symbolize(_ target: UInt64) -> String? {
        if let hit = index.symbolize(target, section: symbolSection) {
            return hit.offset == 0 ? hit.symbol.name : hit.symbol.name + "+" + Hex.address(hit.offset)
        }
        if target >= start, target <= end {
            let delta = target - start
            return delta == 0 ? function.name : function.name + "+" + Hex.address(delta)
        }
        return nil
    }

    /// The relocations that patch this function, as objdump -r writes them, by field address.
    func relocationAnnotations() throws -> [UInt64: [String]] {
        var result: [UInt64: [String]] = [:]
        let fileStart = start &- UInt64(bitPattern: slide), fileEnd = fileStart + size
        for relocation in try file.relocations(applyingTo: section)
        where relocation.offset >= fileStart && relocation.offset < fileEnd {
            var text = relocation.typeName + "\t" + (relocation.symbolName.isEmpty ? "*ABS*" : relocation.symbolName)
            // REL entries keep their addend in the field, and objdump shows none.
            if relocation.hasExplicitAddend, relocation.addend != 0 {
                text += relocation.addend < 0 ? "-" + Hex.address(relocation.addend.magnitude)
                                              : "+" + Hex.address(UInt64(relocation.addend))
            }
            result[relocation.offset &+ UInt64(bitPattern: slide), default: []].append(text)
        }
        return result
    }
}
