import ArgumentParser
import Disassembly
import ELF
import Foundation
import Symbols

/// `suture locate EXPR --object FILE --kallsyms F`: the article's arithmetic, shown step by step.
///
/// The 2007 article found its byte by hand: the function's section offset plus the symbol's value
/// gave the function's place in nfs.ko (0x885), plus the instruction's offset the byte to change
/// (0x8d9), and the running kernel's symbol address plus the same offset the byte in memory.
struct LocateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "locate",
        abstract: "Find an instruction in an object file and in the running kernel: offsets, bytes, live address.",
        discussion: """
            EXPR names a place in the object's code: nfs_flock+0x2f, "nfs_flock [nfs]+0x2f", nfs_flock/2+0x10. \
            Shows the function's section and file offset, the instruction's offset and file offset, the \
            instruction decoded there, whether EXPR starts an instruction, and the live address (the \
            symbol's address in the kallsyms or System.map plus the offset).
            """)

    @Argument(help: ArgumentHelp("The place: symbol+offset.", valueName: "expr"))
    var expression: String

    @Option(name: .long, help: ArgumentHelp("The object holding the code (.ko, .o, vmlinux).", valueName: "file"))
    var object: String

    @Option(name: .long, help: ArgumentHelp("The running kernel's symbols (/proc/kallsyms copy).", valueName: "file"))
    var kallsyms: String?

    @Option(name: .customLong("system-map"), help: ArgumentHelp("The kernel's System.map.", valueName: "file"))
    var systemMap: String?

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    @Flag(name: .long, help: "Intel syntax instead of AT&T.")
    var intel = false

    func validate() throws {
        guard (kallsyms == nil) != (systemMap == nil) else {
            throw ValidationError("give one of --kallsyms, --system-map (where the code lives in the running kernel)")
        }
    }

    func run() throws {
        try running("locate") {
            let location = try Location.find(expression, object: object, kallsyms: kallsyms, systemMap: systemMap,
                                             syntax: intel ? .intel : .att)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(location), as: UTF8.self))
            } else {
                print(location.text, terminator: "")
            }
        }
    }
}

/// Where one instruction is: in the object (section, offsets) and in the running kernel.
struct Location: Encodable {
    struct Decoded: Encodable {
        var offset: String
        var bytes: String
        var mnemonic: String
        var operands: String
        /// As a listing shows it: `74 39  je     92ca <nfs_flock+0x6a>`.
        var text: String
    }

    var expression: String
    var object: String
    var module: String?
    var symbol: String
    var section: String
    var sectionFileOffset: String
    /// The symbol's value in the section (relocatable objects), or its offset into the section.
    var symbolValue: String
    /// The function's address, for linked files (vmlinux, programs).
    var functionAddress: String?
    var functionFileOffset: String
    var functionSize: String
    var offset: String
    var sectionOffset: String
    var instructionFileOffset: String
    var onBoundary: Bool
    /// The instruction at EXPR, or the one EXPR falls inside.
    var instruction: Decoded?
    var map: String
    var mapKind: String
    var liveSymbol: String
    var liveSymbolAddress: String
    var liveAddress: String
    /// The compression the object was stored with: file offsets are then into the decompressed image.
    var compression: String?

    /// Text for people, one fact a line, with the sums written out.
    var text: String {
        var lines: [String] = []
        lines.append("\(expression) in \(object)\(module.map { " [\($0)]" } ?? "")"
                     + (compression.map { " (\($0)-compressed: file offsets are into the decompressed image)" } ?? ""))
        if let functionAddress {
            // A linked file: the symbol is an address; its offset into the section places it in the file.
            lines.append("  function     \(symbol) at \(functionAddress): section \(section) at file offset \(sectionFileOffset) "
                         + "+ \(symbolValue) into it = file offset \(functionFileOffset) (size \(functionSize))")
        } else {
            lines.append("  function     \(symbol): section \(section) at file offset \(sectionFileOffset) "
                         + "+ symbol value \(symbolValue) = file offset \(functionFileOffset) (size \(functionSize))")
        }
        lines.append("  instruction  +\(offset): \(section) offset \(sectionOffset), "
                     + "file offset \(functionFileOffset) + \(offset) = \(instructionFileOffset)")
        if let instruction {
            lines.append("  decoded      \(instruction.text)")
            lines.append(onBoundary ? "  boundary     yes: +\(offset) starts an instruction"
                                    : "  boundary     NO: +\(offset) is inside the instruction at +\(instruction.offset)")
        }
        lines.append("  live         \(liveSymbol) at \(liveSymbolAddress) (\(mapKind) \(map)) + \(offset) = \(liveAddress)")
        return lines.joined(separator: "\n") + "\n"
    }

    static func find(_ expressionText: String, object: String, kallsyms: String?, systemMap: String?,
                     syntax: AssemblySyntax) throws -> Location {
        guard let map = try SymbolMap.load(kallsyms: kallsyms, systemMap: systemMap) else {
            throw CommandFailure("give --kallsyms or --system-map")
        }
        // The object's own symbols place the function; a stripped vmlinux needs the map's.
        let code = try FunctionCode(path: object, expression: expressionText, map: map, mapOnlyWhenStripped: true)
        let slide = UInt64(bitPattern: code.slide)
        let fileStart = code.start &- slide
        let module = SymbolSources.moduleName(ofObject: object)

        // The object side: decode the whole function, find the instruction at or around EXPR.
        let disassembler = try Disassembler(architecture: code.architecture, syntax: syntax)
        let instructions = disassembler.decode(code.bytes, address: code.start)
        let containing = instructions.last { $0.address <= code.address && code.address < $0.endAddress }
        let decoded = containing.map { insn -> Location.Decoded in
            let line = Listing(instructions: [insn], addressWidth: 1, symbolize: code.symbolize,
                               architecture: code.architecture).render()
            // Keep the bytes and the text of the listing line, not its address column.
            let fields = line.split(separator: "\n")[0].split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            let bytesColumn = fields.count > 1 ? fields[1].trimmingCharacters(in: .whitespaces) : Hex.bytes(insn.bytes)
            let textColumn = fields.count > 2 ? String(fields[2]) : insn.mnemonic
            return Location.Decoded(offset: Hex.address(insn.address - code.start), bytes: Hex.bytes(insn.bytes),
                                    mnemonic: insn.mnemonic, operands: insn.operands,
                                    text: bytesColumn + "  " + textColumn)
        }

        // The live side: the same function in the kernel's symbols (its module's, for a .ko).
        let live: SymbolRecord
        do {
            live = try map.index.resolve(name: code.function.name, module: module ?? "vmlinux")
        } catch {
            throw CommandFailure("\(code.function.name)\(module.map { " [\($0)]" } ?? ""): not found in \(map.path): \(error)")
        }
        let (liveAddress, overflow) = live.address.addingReportingOverflow(code.offset)
        guard !overflow else { throw CommandFailure("\(live.name) at \(Hex.address(live.address)) + \(Hex.address(code.offset)) overflows") }

        let sectionOffset = code.relocatable ? code.address : fileStart + code.offset - code.section.address
        let functionFileOffset = code.fileOffset
        return Location(
            expression: expressionText, object: object, module: module, symbol: code.function.name,
            section: code.section.name, sectionFileOffset: Hex.address(code.section.offset),
            symbolValue: Hex.address(code.relocatable ? code.start : fileStart - code.section.address),
            functionAddress: code.relocatable ? nil : Hex.address(fileStart),
            functionFileOffset: Hex.address(functionFileOffset), functionSize: Hex.address(code.size),
            offset: Hex.address(code.offset), sectionOffset: Hex.address(sectionOffset),
            instructionFileOffset: Hex.address(functionFileOffset + code.offset),
            onBoundary: containing?.address == code.address, instruction: decoded,
            map: map.path, mapKind: map.kind, liveSymbol: live.qualifiedName, liveSymbolAddress: Hex.address(live.address),
            liveAddress: Hex.address(liveAddress), compression: code.file.compression)
    }
}
