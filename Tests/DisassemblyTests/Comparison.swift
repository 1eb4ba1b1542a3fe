import Disassembly
import ELF

/// Our `decode` output against objdump's listing of the same bytes, instruction by instruction.
struct Comparison {
    /// Address or bytes differ (the sweeps parted).
    var layout: [String] = []
    /// Mnemonic roots differ, grouped by pair: count and first example.
    var names: [String: (count: Int, example: String)] = [:]
    /// Direct branch or call whose destination (or kind) differs.
    var targets: [String] = []
    var instructions = 0
    var branches = 0

    var isClean: Bool { layout.isEmpty && names.isEmpty && targets.isEmpty }

    var report: String {
        (layout.prefix(20) + names.sorted { $0.key < $1.key }.map { "\($0.value.count)× \($0.value.example)" }
            + targets.prefix(40)).joined(separator: "\n")
    }

    init(ours: [Instruction], objdump theirs: [Objdump.Line]) {
        if ours.count != theirs.count {
            layout.append("decode found \(ours.count) instructions, objdump \(theirs.count)")
        }
        for (insn, line) in zip(ours, theirs) {
            instructions += 1
            if insn.address != line.address || insn.bytes != line.bytes {
                layout.append("\(insn.summary) vs objdump \(Hex.address(line.address)): \(Hex.bytes(line.bytes))")
                if layout.count > 20 { break }
                continue
            }
            if !Self.sameRoot(insn.mnemonic, line.mnemonic, bytes: insn.bytes) {
                let example = "\(insn.summary) vs objdump \((line.prefixes + [line.mnemonic, line.operands]).joined(separator: " "))"
                names["\(insn.mnemonic) / \(line.mnemonic)", default: (0, example)].count += 1
            }
            let objdumpTarget = Self.branchLike(line.mnemonic) ? Objdump.branchTarget(line) : nil
            if insn.target != nil || objdumpTarget != nil {
                branches += 1
                let direct = [.jump, .conditionalJump, .call].contains(insn.branch)
                if insn.target != objdumpTarget || !direct {
                    targets.append("\(insn.summary) [\(insn.branch) → \(insn.target.map { Hex.address($0) } ?? "nil")] "
                                   + "vs objdump \(line.mnemonic) \(line.operands)")
                }
            }
        }
    }

    /// Capstone 4 and binutils 2.40 spell some mnemonics differently: AT&T size suffixes
    /// (`callq`/`call`, `movq`/`mov`), prefixes written into the mnemonic (`lock cmpxchgq`) or apart
    /// (`cs nopw`). The root is what is left when those are removed.
    static func root(_ mnemonic: String) -> String {
        var words = mnemonic.split(separator: " ").map(String.init)
        while words.count > 1, Objdump.prefixWords.contains(words[0]) { words.removeFirst() }
        return words.first ?? ""
    }

    static func sameRoot(_ capstone: String, _ objdump: String, bytes: [UInt8]) -> Bool {
        let a = root(capstone), b = root(objdump)
        if a == b { return true }
        // `66 90`: Capstone says nop, objdump xchg %ax,%ax (the only other difference in nfs.ko).
        if bytes == [0x66, 0x90], a == "nop", b == "xchg" { return true }
        // Size suffixes: one side has b/w/l/q the other lacks.
        for (long, short) in [(a, b), (b, a)] where long.count == short.count + 1 && long.hasPrefix(short) {
            if "bwlq".contains(long.last!) { return true }
        }
        return false
    }

    static func branchLike(_ objdumpMnemonic: String) -> Bool {
        let m = objdumpMnemonic
        return m.hasPrefix("j") || m.hasPrefix("call") || m.hasPrefix("loop") || m == "xbegin"
    }
}
