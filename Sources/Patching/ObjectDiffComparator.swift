import ELF
import Disassembly

/// Compares one function or object of the original file with its counterpart in the patched file,
/// relocation-aware: relocated fields, direct branches and RIP-relative operands are compared by
/// what they point to, not by their bytes.
///
/// Functions first take a fast path over the raw bytes and relocations; only when that finds
/// anything (or cannot tell, see `fastIdentical`) are both versions disassembled and compared
/// instruction by instruction.
struct ObjectDiffComparator {
    let a: ObjectDiffSide
    let b: ObjectDiffSide
    /// Unit index → pair number, per side (unpaired units get numbers of their own).
    let pairOfA: [Int]
    let pairOfB: [Int]
    /// Pair number → name, for messages.
    let pairNames: [String]
    let disassembler: Disassembler?
    let architecture: Architecture?

    enum Which { case original, patched }

    /// A field inside a unit whose bytes stand for a target.
    struct Field {
        var range: Range<Int>
        var target: ObjectDiffTarget
        /// Section and offset of the target, when it is a place in this file (for string edits).
        var place: (section: Int, offset: UInt64)?
        /// The relocation behind the field, if any.
        var relocation: Relocation?
        /// Instruction end minus field start, for PC-relative fields in code (0 otherwise).
        var bias: Int64
    }

    /// A string-literal difference found through one field.
    struct StringUse {
        var range: Range<Int>
        var originalPlace: (section: Int, offset: UInt64)
        var patchedPlace: (section: Int, offset: UInt64)
        var original: [UInt8]
        var patched: [UInt8]
        var relocation: Relocation?
        var bias: Int64
    }

    /// A reference to an anonymous place on both sides, judged once every unit has been compared.
    struct AnonymousUse {
        var range: Range<Int>
        var section: String
        var original: UInt64
        var patched: UInt64
    }

    struct Result {
        var differences: [ObjectDiff.Difference] = []
        /// Byte ranges that differ in the files but mean the same (relocation placeholders, branch
        /// displacements to the same target): a hunk keeps the original's bytes there.
        var equivalent: [Range<Int>] = []
        var strings: [StringUse] = []
        var anonymous: [AnonymousUse] = []
        var originalInstructions: [Instruction]?
        var patchedInstructions: [Instruction]?
    }

    // MARK: Entry

    func compare(original i: Int, patched j: Int) throws(ObjectDiffError) -> Result {
        let ua = a.units[i], ub = b.units[j]
        let bytesA = try a.bytes(of: ua), bytesB = try b.bytes(of: ub)
        var result = Result()
        if ua.size == ub.size, bytesA.count != bytesB.count {
            // One side zero-filled (.bss), the other initialised.
            result.differences.append(.init(range: 0..<Int(ua.size), kind: .layout(
                "moved between \(ua.section) and \(ub.section) (zero-filled and initialised data)")))
            return result
        }
        if ua.kind == .object {
            guard ua.size == ub.size else {
                result.differences.append(.init(range: 0..<Int(max(ua.size, ub.size)), kind: .size(original: ua.size, patched: ub.size)))
                return result
            }
            let fa = relocationFields(i, side: .original, code: false, instructions: nil)
            let fb = relocationFields(j, side: .patched, code: false, instructions: nil)
            compareRange(0..<Int(ua.size), bytesA, bytesB, fa, fb, into: &result)
            return result
        }
        if ua.size == ub.size, let fast = fastIdentical(i, j, bytesA, bytesB) {
            result.anonymous = fast
            return result
        }
        return try compareInstructions(i, j, bytesA, bytesB)
    }

    // MARK: Fast path

    /// Whether the two versions are equal without disassembling: same bytes outside relocated
    /// fields, same relocations, same targets. Returns the anonymous references still to judge, or
    /// nil when anything differs or the answer needs the exact instruction ends.
    ///
    /// A PC-relative field in code points to S + A + (instruction end - field start), and that
    /// distance is 4 to 8 bytes (the field may be followed by an immediate). Without decoding it
    /// is unknown, so each target is checked at both ends of that window: when both ends name the
    /// same place on each side, every distance in between does too.
    private func fastIdentical(_ i: Int, _ j: Int, _ bytesA: ByteView, _ bytesB: ByteView) -> [AnonymousUse]? {
        let ua = a.units[i], ub = b.units[j]
        let ra = a.relocations(in: ua.sectionIndex, range: ua.offset..<ua.offset + ua.size)
        let rb = b.relocations(in: ub.sectionIndex, range: ub.offset..<ub.offset + ub.size)
        guard ra.count == rb.count, bytesA.count == Int(ua.size), bytesB.count == bytesA.count, bytesA.count > 0 else { return nil }
        var anonymous: [AnonymousUse] = []
        var fieldEnd = 0
        var equal = true
        bytesA.withUnsafeBytes { pa in
            bytesB.withUnsafeBytes { pb in
                var position = 0
                for (x, y) in zip(ra, rb) {
                    let start = Int(x.offset - ua.offset)
                    guard start == Int(y.offset - ub.offset), x.type == y.type, start >= fieldEnd else { equal = false; return }
                    if memcmp(pa.baseAddress! + position, pb.baseAddress! + position, start - position) != 0 { equal = false; return }
                    let size = x.fieldSize ?? a.file.header.addressSize
                    position = min(start + size, pa.count)
                    fieldEnd = position
                    guard sameFastTarget(x, y, range: start..<position, anonymous: &anonymous) else { equal = false; return }
                }
                if position < pa.count, memcmp(pa.baseAddress! + position, pb.baseAddress! + position, pa.count - position) != 0 {
                    equal = false
                }
            }
        }
        return equal ? anonymous : nil
    }

    private func sameFastTarget(_ x: Relocation, _ y: Relocation, range: Range<Int>, anonymous: inout [AnonymousUse]) -> Bool {
        let relative = Self.isPCRelative(x, machine: a.file.header.machine)
        guard Self.isPlaceBased(x, side: a) && Self.isPlaceBased(y, side: b) else {
            return x.symbolName == y.symbolName && x.addend == y.addend && x.symbolType == y.symbolType
        }
        let low: Int64 = relative ? 4 : 0, high: Int64 = relative ? 8 : 0
        let xl = place(x, side: .original, bias: low), xh = place(x, side: .original, bias: high)
        let yl = place(y, side: .patched, bias: low), yh = place(y, side: .patched, bias: high)
        guard let xl, let xh, let yl, let yh else { return false }
        switch (target(xl, side: .original), target(xh, side: .original), target(yl, side: .patched), target(yh, side: .patched)) {
        case let (.unit(p, d), .unit(q, _), .unit(r, e), .unit(s, _)):
            return p == q && r == s && p == r && d == e
        case (.string, _, .string, _):
            // The true target lies in [low, high]: equal windows (and strings after them) mean equal strings.
            guard a.section(xl.section).name == b.section(yl.section).name else { return false }
            let wa = window(a, xl), wb = window(b, yl)
            return wa != nil && wa == wb
        case let (.anonymous(sa, oa), .anonymous(sa2, _), .anonymous(sb, ob), .anonymous(sb2, _)):
            guard sa == sa2, sb == sb2, sa == sb else { return false }
            anonymous.append(AnonymousUse(range: range, section: sa, original: oa, patched: ob))
            return true
        case let (.address(p), _, .address(q), _):
            return p == q
        default:
            return false
        }
    }

    /// Bytes from `place` up to the first NUL at or after `place + 4`: every string that may start
    /// in that window, in full (see `fastIdentical`).
    private func window(_ side: ObjectDiffSide, _ place: (section: Int, offset: UInt64)) -> [UInt8]? {
        var result: [UInt8] = []
        var at = place.offset
        while true {
            guard let text = side.string(in: place.section, at: at) else { return result.isEmpty ? nil : result }
            result += text
            if at + UInt64(text.count) >= place.offset + 4 { return result }
            result.append(0)
            at += UInt64(text.count) + 1
        }
    }

    // MARK: Instruction by instruction

    private func compareInstructions(_ i: Int, _ j: Int, _ bytesA: ByteView, _ bytesB: ByteView) throws(ObjectDiffError) -> Result {
        let ua = a.units[i], ub = b.units[j]
        var result = Result()
        guard let disassembler else {
            // No decoder for this machine: bytes and relocations only.
            let fa = relocationFields(i, side: .original, code: false, instructions: nil)
            let fb = relocationFields(j, side: .patched, code: false, instructions: nil)
            if ua.size == ub.size { compareRange(0..<Int(ua.size), bytesA, bytesB, fa, fb, into: &result) }
            else { result.differences.append(.init(range: 0..<Int(max(ua.size, ub.size)), kind: .size(original: ua.size, patched: ub.size))) }
            return result
        }
        let insnA = disassembler.decode(bytesA, address: ua.address)
        let insnB = disassembler.decode(bytesB, address: ub.address)
        result.originalInstructions = insnA
        result.patchedInstructions = insnB
        guard ua.size == ub.size else {
            result.differences.append(.init(range: 0..<Int(max(ua.size, ub.size)), kind: .size(original: ua.size, patched: ub.size)))
            return result
        }
        let fa = fields(i, side: .original, instructions: insnA)
        let fb = fields(j, side: .patched, instructions: insnB)
        var ia = 0, ib = 0, fia = 0, fib = 0
        while ia < insnA.count, ib < insnB.count {
            let start = Int(insnA[ia].address - ua.address)
            var endA = start + insnA[ia].size, endB = start + insnB[ib].size
            if endA != endB {
                // Different instruction lengths: everything up to the next common boundary differs.
                while endA != endB, ia < insnA.count, ib < insnB.count {
                    if endA < endB { ia += 1; if ia < insnA.count { endA += insnA[ia].size } } else { ib += 1; if ib < insnB.count { endB += insnB[ib].size } }
                }
                let end = min(max(endA, endB), Int(ua.size))
                result.differences.append(.init(range: start..<end, kind: .bytes))
                ia += 1; ib += 1
                // Fields inside re-encoded instructions cannot be carried over: the bytes around them moved.
                for f in fa[fia...] where f.range.lowerBound < end {
                    result.differences.append(.init(range: f.range, kind: .layout(
                        "\(f.relocation == nil ? "branch" : "relocated field") to \(describe(f.target)) lies in re-encoded instructions")))
                }
                for f in fb[fib...] where f.range.lowerBound < end && !fa[fia...].contains(where: { $0.range.lowerBound == f.range.lowerBound }) {
                    result.differences.append(.init(range: f.range, kind: .layout(
                        "\(f.relocation == nil ? "branch" : "relocated field") to \(describe(f.target)) lies in re-encoded instructions")))
                }
                while fia < fa.count, fa[fia].range.lowerBound < end { fia += 1 }
                while fib < fb.count, fb[fib].range.lowerBound < end { fib += 1 }
                continue
            }
            var ha = fia, hb = fib
            while ha < fa.count, fa[ha].range.lowerBound < endA { ha += 1 }
            while hb < fb.count, fb[hb].range.lowerBound < endA { hb += 1 }
            compareRange(start..<endA, bytesA, bytesB, Array(fa[fia..<ha]), Array(fb[fib..<hb]), into: &result)
            fia = ha; fib = hb
            ia += 1; ib += 1
        }
        return result
    }

    /// Compares `range` of both units: bytes outside every field, then the fields' targets.
    private func compareRange(_ range: Range<Int>, _ bytesA: ByteView, _ bytesB: ByteView,
                              _ fa: [Field], _ fb: [Field], into result: inout Result) {
        guard bytesA.count > 0 || bytesB.count > 0 else { return }       // SHT_NOBITS: zeros both sides
        var covered = [Bool](repeating: false, count: range.count)
        for f in fa + fb {
            for k in max(f.range.lowerBound, range.lowerBound)..<min(f.range.upperBound, range.upperBound) {
                covered[k - range.lowerBound] = true
            }
        }
        var runStart: Int?
        for k in range {
            let differs = !covered[k - range.lowerBound] && bytesA[k] != bytesB[k]
            if differs, runStart == nil { runStart = k }
            if !differs, let s = runStart { result.differences.append(.init(range: s..<k, kind: .bytes)); runStart = nil }
        }
        if let s = runStart { result.differences.append(.init(range: s..<range.upperBound, kind: .bytes)) }

        var matched = Set<Int>()
        for x in fa {
            guard let k = fb.firstIndex(where: { $0.range == x.range }) else {
                result.differences.append(.init(range: x.range, kind: .layout("\(describe(x, side: .original)) has no counterpart in the patched file")))
                continue
            }
            matched.insert(k)
            let y = fb[k]
            if x.target == y.target {
                result.equivalent.append(x.range)
                continue
            }
            switch (x.target, y.target) {
            case let (.anonymous(sa, oa), .anonymous(sb, ob)) where sa == sb:
                result.anonymous.append(AnonymousUse(range: x.range, section: sa, original: oa, patched: ob))
            case let (.string(sa), .string(sb)):
                if let pa = x.place, let pb = y.place {
                    result.strings.append(StringUse(range: x.range, originalPlace: pa, patchedPlace: pb, original: sa, patched: sb,
                                                    relocation: x.relocation, bias: x.bias))
                }
                result.differences.append(.init(range: x.range, kind: .string(original: sa, patched: sb)))
            default:
                result.differences.append(.init(range: x.range, kind: .reference(original: describe(x, side: .original),
                                                                                  patched: describe(y, side: .patched))))
            }
        }
        for (k, y) in fb.enumerated() where !matched.contains(k) {
            result.differences.append(.init(range: y.range, kind: .layout("\(describe(y, side: .patched)) has no counterpart in the original file")))
        }
    }

    // MARK: Fields

    /// Relocated fields, branch displacements and RIP-relative displacements of a decoded function,
    /// sorted by position.
    private func fields(_ index: Int, side which: Which, instructions: [Instruction]) -> [Field] {
        let side = which == .original ? a : b
        let unit = side.units[index]
        var result = relocationFields(index, side: which, code: true, instructions: instructions)
        var r = 0
        for insn in instructions where !insn.isInvalid {
            let start = Int(insn.address - unit.address), end = start + insn.size
            while r < result.count, result[r].range.upperBound <= start { r += 1 }
            if r < result.count, result[r].range.lowerBound < end { continue }     // relocations say it all
            if let target = insn.target, insn.branch == .jump || insn.branch == .conditionalJump || insn.branch == .call {
                // Within the function the displacement is position-independent: compare its bytes.
                if target >= unit.address && target < unit.address + unit.size { continue }
                let size = displacementSize(insn)
                if let (section, offset) = place(address: target, side: side, sameSectionAs: unit) {
                    result.append(Field(range: end - size..<end, target: self.target((section, offset), side: which),
                                        place: (section, offset), relocation: nil, bias: 0))
                }
            } else if !side.isRelocatable, let (field, address) = ripRelative(insn) {
                if let (section, offset) = side.locate(address) {
                    result.append(Field(range: start + field..<start + field + 4, target: self.target((section, offset), side: which),
                                        place: (section, offset), relocation: nil, bias: 0))
                }
            }
        }
        result.sort { $0.range.lowerBound < $1.range.lowerBound }
        return result
    }

    /// The relocated fields of a unit. In code, a PC-relative field's target is taken at the end of
    /// its instruction (from `instructions`); elsewhere at S + A.
    private func relocationFields(_ index: Int, side which: Which, code: Bool, instructions: [Instruction]?) -> [Field] {
        let side = which == .original ? a : b
        let unit = side.units[index]
        var result: [Field] = []
        var k = 0
        for relocation in side.relocations(in: unit.sectionIndex, range: unit.offset..<unit.offset + unit.size) {
            let start = Int(relocation.offset - unit.offset)
            let size = relocation.fieldSize ?? side.file.header.addressSize
            var bias: Int64 = 0
            if code, Self.isPCRelative(relocation, machine: side.file.header.machine), let instructions {
                while k < instructions.count, Int(instructions[k].endAddress - unit.address) <= start { k += 1 }
                bias = k < instructions.count ? Int64(Int(instructions[k].endAddress - unit.address) - start) : Int64(size)
            }
            let at = place(relocation, side: which, bias: bias)
            let target: ObjectDiffTarget
            if let at {
                target = self.target(at, side: which)
            } else if relocation.symbolIndex == 0 {
                target = .address(UInt64(bitPattern: relocation.addend))
            } else {
                target = .symbol(relocation.symbolName, relocation.addend + bias)
            }
            result.append(Field(range: start..<min(start + size, Int(unit.size)), target: target, place: at,
                                relocation: relocation, bias: bias))
        }
        return result
    }

    // MARK: Places and targets

    /// The section and offset a relocation points to, when it points into this file through a
    /// section symbol (or, in a linked image, through an address); nil for named symbols.
    private func place(_ r: Relocation, side which: Which, bias: Int64) -> (section: Int, offset: UInt64)? {
        let side = which == .original ? a : b
        if r.symbolIndex == 0 {
            guard !side.isRelocatable else { return nil }
            return side.locate(UInt64(bitPattern: r.addend &+ bias)).map { ($0.0, $0.1) }
        }
        guard Self.isPlaceBased(r, side: side) else { return nil }
        let index = Int(r.symbolSectionIndex)
        guard index > 0, index < side.file.sections.count else { return nil }
        let value = Int64(bitPattern: side.isRelocatable ? r.symbolValue : r.symbolValue &- side.section(index).address)
        let offset = value &+ r.addend &+ bias
        guard offset >= 0 else { return nil }
        return (index, UInt64(offset))
    }

    /// A direct branch's destination: in a relocatable file the same section (branches across
    /// sections always carry a relocation), else wherever the address lies.
    private func place(address: UInt64, side: ObjectDiffSide, sameSectionAs unit: ObjectDiff.Unit) -> (Int, UInt64)? {
        if side.isRelocatable {
            let base = side.section(unit.sectionIndex).address
            return address >= base ? (unit.sectionIndex, address - base) : nil
        }
        return side.locate(address)
    }

    private func target(_ place: (section: Int, offset: UInt64), side which: Which) -> ObjectDiffTarget {
        let side = which == .original ? a : b
        if side.isStringSection(place.section), let text = side.string(in: place.section, at: place.offset) {
            return .string(text)
        }
        if let unit = side.unit(containing: place.offset, in: place.section) {
            let pair = which == .original ? pairOfA[unit] : pairOfB[unit]
            return .unit(pair, Int64(place.offset - side.units[unit].offset))
        }
        return .anonymous(side.section(place.section).name, place.offset)
    }

    /// `nfs_flock+0x6a`, `"NFS: flock"`, `.rodata+0x40`: a field's target for messages.
    func describe(_ field: Field, side which: Which) -> String {
        describe(field.target)
    }

    func describe(_ target: ObjectDiffTarget) -> String {
        func plus(_ name: String, _ delta: Int64) -> String {
            delta == 0 ? name : name + (delta < 0 ? "-" : "+") + Hex.address(delta.magnitude)
        }
        switch target {
        case let .symbol(name, delta): return plus(name, delta)
        case let .unit(pair, delta): return plus(pair < pairNames.count ? pairNames[pair] : "?", delta)
        case let .string(bytes): return ObjectDiff.quote(bytes)
        case let .anonymous(section, offset): return section + "+" + Hex.address(offset)
        case let .address(value): return Hex.address(value)
        }
    }

    // MARK: Instruction details

    /// Whether a relocation names a place rather than a symbol: a section symbol, a local label
    /// (`.LC0`, which gas keeps for mergeable string sections), or (linked images) an address.
    static func isPlaceBased(_ r: Relocation, side: ObjectDiffSide) -> Bool {
        if r.symbolIndex == 0 { return !side.isRelocatable }
        guard r.symbolSectionIndex != 0, r.symbolSectionIndex < ELFConstants.SHN_LORESERVE else { return false }
        return r.symbolType == .section || r.symbolType == .notype
    }

    /// Whether the field holds a distance from itself (S + A - P) rather than an address.
    static func isPCRelative(_ r: Relocation, machine: Machine) -> Bool {
        switch machine {
        case .x86_64:
            // PC32, PLT32, GOTPCREL, PC16, PC8, GOTPC32, PC64, GOTPCREL64, GOTPC64, GOTPCRELX, REX_GOTPCRELX
            switch r.type { case 2, 4, 9, 13, 15, 24, 26, 28, 29, 41, 42: return true; default: return false }
        case .i386:
            // PC32, PLT32, GOTPC, PC16, PC8
            switch r.type { case 2, 4, 10, 21, 23: return true; default: return false }
        default:
            let name = r.typeName.utf8
            return name.contains("PREL".utf8) || name.contains("PC".utf8) || name.contains("PLT".utf8)
        }
    }

    /// Bytes of a direct branch's displacement at its end: rel32 for call/jmp (e8/e9) and Jcc
    /// (0f 8x), rel8 otherwise; an arm64 branch encodes it in the whole word.
    private func displacementSize(_ insn: Instruction) -> Int {
        if architecture == .arm64 { return insn.size }
        let bytes = insn.bytes, n = bytes.count
        if n >= 5, bytes[n - 5] == 0xe8 || bytes[n - 5] == 0xe9 { return 4 }
        if n >= 6, bytes[n - 6] == 0x0f, bytes[n - 5] & 0xf0 == 0x80 { return 4 }
        return 1
    }

    /// A RIP-relative operand (AT&T `disp(%rip)`): where its 32-bit displacement sits in the
    /// instruction and the address it names.
    private func ripRelative(_ insn: Instruction) -> (field: Int, address: UInt64)? {
        guard architecture == .x86_64, let range = insn.operands.range(of: "(%rip)") else { return nil }
        let head = insn.operands[..<range.lowerBound]
        let text = head.reversed().prefix { $0.isHexDigit || $0 == "x" || $0 == "-" }
        let literal = String(text.reversed())
        let negative = literal.hasPrefix("-")
        let digits = literal.drop { $0 == "-" }
        guard let magnitude = digits.hasPrefix("0x") ? Int64(digits.dropFirst(2), radix: 16) : Int64(digits),
              let displacement = Int32(exactly: negative ? -magnitude : magnitude) else { return nil }
        let pattern = withUnsafeBytes(of: displacement.littleEndian) { Array($0) }
        let bytes = insn.bytes
        guard bytes.count >= 5 else { return nil }
        for start in stride(from: bytes.count - 4, through: 1, by: -1) where Array(bytes[start..<start + 4]) == pattern {
            return (start, insn.endAddress &+ UInt64(bitPattern: Int64(displacement)))
        }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
