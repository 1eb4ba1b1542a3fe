import ELF
import Symbols
import Disassembly
import Targets

/// Bundles composed by hand against a live target: `flip` a conditional jump, `poke` bytes.
///
/// Both read the live instruction(s) first and make a hunk covering whole instructions, so the
/// engine's boundary check holds and the journal records exactly what was there. The bundle is
/// bound to the target's live identity: it is for this kernel or program only.
///
/// With a `reference` file (the `.ko` or object the code came from), the bundle also carries the
/// whole function's image from that file (bytes plus the mask of run-time rewritten bytes), so
/// preflight's function check compares every byte of the live function, not just the hunk's.
public struct HandPatch {
    public let target: MemoryTarget
    public let symbols: SymbolIndex?
    public let architecture: Architecture
    /// The file the patched function came from; nil attaches no function image.
    public let reference: ReferenceObject?

    public init(target: MemoryTarget, symbols: SymbolIndex?, architecture: Architecture = .x86_64,
                reference: ReferenceObject? = nil) {
        self.target = target
        self.symbols = symbols
        self.architecture = architecture
        self.reference = reference
    }

    /// A one-hunk bundle inverting the conditional jump at `address` (`je` ↔ `jne`, …).
    /// Refuses anything that is not a conditional jump, naming the instruction found.
    public func flip(at address: UInt64) throws -> PatchBundle {
        let disassembler = try Disassembler(architecture: architecture)
        // 15 bytes is the longest x86 instruction; arm64 needs 4.
        let window = try readUpTo(address, count: architecture == .arm64 ? 4 : 15)
        guard let instruction = disassembler.decodeOne(window, address: address), !instruction.isInvalid else {
            throw HandPatchError.undecodable(address: address, bytes: window)
        }
        let replacement = try BranchEdit.invertConditionalJump(instruction, architecture: architecture)
        let flipped = disassembler.decodeOne(replacement, address: address)
        let text = "flip \(instruction.mnemonic) → \(flipped?.mnemonic ?? "?") at \(placeName(address))"
        return try bundle(address: address, expected: instruction.bytes, replacement: replacement, description: text)
    }

    /// A one-hunk bundle writing `replacement` where `expected` must be now. The hunk is widened to
    /// the whole instructions containing the bytes, taking the other bytes from the live target.
    public func poke(at address: UInt64, expected: [UInt8], replacement: [UInt8]) throws -> PatchBundle {
        guard expected.count == replacement.count, !expected.isEmpty else {
            throw HandPatchError.lengthMismatch(expected: expected.count, replacement: replacement.count)
        }
        let end = address + UInt64(expected.count)
        var start = address, stop = end
        if let function = symbols?.function(containing: address), let size = function.size,
           address >= function.address, end <= function.address + size,
           // Data (a string in .rodata) has no instructions to widen to, whatever symbol is near.
           !HunkPlacementClassifier(target: target, symbols: symbols).classify(address..<end, function: function).isData {
            let code = try target.read(at: function.address, count: Int(size))
            let instructions = try Disassembler(architecture: architecture).decode(code, address: function.address)
            if let first = instructions.last(where: { $0.address <= address }) { start = first.address }
            if let last = instructions.first(where: { $0.endAddress >= end }) { stop = last.endAddress }
        }
        var live = try target.read(at: start, count: Int(stop - start))
        var new = live
        let at = Int(address - start)
        live.replaceSubrange(at..<(at + expected.count), with: expected)
        new.replaceSubrange(at..<(at + replacement.count), with: replacement)
        return try bundle(address: start, expected: live, replacement: new,
                          description: "poke \(Hex.bytes(expected)) → \(Hex.bytes(replacement)) at \(placeName(address))")
    }

    private func bundle(address: UInt64, expected: [UInt8], replacement: [UInt8], description: String) throws -> PatchBundle {
        let hunk: Hunk
        var functions: [FunctionImage]?
        if let found = symbols?.symbolize(address) {
            let all = symbols?.symbols(named: found.symbol.name).filter { $0.module == found.symbol.module } ?? []
            let ordinal = all.count > 1 ? all.firstIndex(of: found.symbol).map { $0 + 1 } : nil
            hunk = Hunk(symbol: found.symbol.name, module: found.symbol.module, ordinal: ordinal, offset: found.offset,
                        expected: expected, replacement: replacement)
            // Whole-function verification (issue 4): the function as the reference file has it.
            if let reference {
                let function = try reference.function(named: found.symbol.name, ordinal: ordinal, liveSize: found.symbol.size)
                guard found.offset + UInt64(expected.count) <= UInt64(function.size) else {
                    throw HandPatchError.outsideReferenceFunction(location: hunk.location, file: reference.path,
                                                                  size: function.size)
                }
                functions = [function.image(module: found.symbol.module, ordinal: ordinal)]
            }
        } else {
            if let reference { throw HandPatchError.noSymbolForReference(address: address, file: reference.path) }
            hunk = Hunk(symbol: nil, offset: 0, address: address, expected: expected, replacement: replacement)
        }
        return PatchBundle(description: description, target: try target.identity(),
                           architecture: architecture.rawValue, hunks: [hunk], functions: functions)
    }

    private func placeName(_ address: UInt64) -> String {
        guard let found = symbols?.symbolize(address) else { return Hex.address(address) }
        return found.symbol.name + (found.symbol.module.map { " [\($0)]" } ?? "") + "+" + Hex.address(found.offset)
    }

    /// Reads up to `count` bytes, fewer if the end of readable memory is near (for the last
    /// instruction of a mapping).
    private func readUpTo(_ address: UInt64, count: Int) throws -> [UInt8] {
        var n = count
        while true {
            do { return try target.read(at: address, count: n) } catch {
                if n <= 1 { throw error }
                n /= 2
            }
        }
    }
}

public enum HandPatchError: Error, CustomStringConvertible {
    case undecodable(address: UInt64, bytes: [UInt8])
    case lengthMismatch(expected: Int, replacement: Int)
    /// The hunk reaches past the end of the reference file's function.
    case outsideReferenceFunction(location: String, file: String, size: Int)
    /// A reference file was given but the address has no symbol to find the function by.
    case noSymbolForReference(address: UInt64, file: String)

    public var description: String {
        switch self {
        case let .undecodable(address, bytes): "\(Hex.address(address)): no valid instruction in \(Hex.bytes(bytes))"
        case let .lengthMismatch(e, r): "--expect has \(e) bytes and --write \(r): they must be the same non-zero length"
        case let .outsideReferenceFunction(location, file, size):
            "\(location) reaches past the end of the function in \(file) (\(size) bytes): is the symbol right?"
        case let .noSymbolForReference(address, file):
            "\(Hex.address(address)) has no symbol on the target, so no function of \(file) can be matched to it"
        }
    }
}
