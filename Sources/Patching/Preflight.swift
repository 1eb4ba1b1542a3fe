import ELF
import Symbols
import Disassembly
import Targets

/// The checks that must all pass before the first byte is written. Each is its own small type so
/// that a report names exactly which one failed, and `--force NAME` can skip exactly that one.
public enum PreflightCheck: String, Sendable, Hashable, Codable, CaseIterable {
    /// The target is the kernel or program the bundle was made for.
    case identity
    /// Live bytes equal each hunk's expected bytes (outside its mask).
    case bytes
    /// Whole functions equal the bundle's run-pre images (outside their masks).
    case function
    /// Each hunk of code lies inside one function and starts and ends on instruction boundaries
    /// (a hunk of data, in a non-executable mapping or a data object, has none to check).
    case boundaries
    /// No CPU or thread is executing inside a hunk (checked while the target is stopped).
    case busy
    /// Targets that cannot be stopped get one naturally-aligned store inside one instruction.
    case atomicity

    /// Checks a user may skip with `--force`; atomicity protects the machine, not the user's intent.
    public static let forceable: Set<PreflightCheck> = [.identity, .bytes, .function, .boundaries, .busy]
}

public struct PreflightFinding: Sendable, Hashable {
    public var check: PreflightCheck
    public var passed: Bool
    /// What was checked, and on failure what was expected and what was found.
    public var detail: String
    /// Failed, but the user forced this check.
    public var forced: Bool = false

    public init(check: PreflightCheck, passed: Bool, detail: String, forced: Bool = false) {
        self.check = check
        self.passed = passed
        self.detail = detail
        self.forced = forced
    }
}

public struct PreflightOptions: Sendable {
    public var force: Set<PreflightCheck>
    /// How often to stop and look for a busy range before refusing (Ksplice's CODE_BUSY).
    public var busyAttempts: Int
    /// Wait between busy attempts, in microseconds; doubles each time.
    public var busyBackoffMicroseconds: UInt32

    public init(force: Set<PreflightCheck> = [], busyAttempts: Int = 5, busyBackoffMicroseconds: UInt32 = 2_000) {
        self.force = force
        self.busyAttempts = busyAttempts
        self.busyBackoffMicroseconds = busyBackoffMicroseconds
    }
}

/// Everything preflight learned: the findings, and the live bytes it read for each hunk (the
/// journal records those as the originals).
public struct PreflightReport: Sendable {
    public var findings: [PreflightFinding]
    public var live: [[UInt8]]
    /// Per hunk: whether the change spans more than one instruction (then no PC may be anywhere in
    /// the function, not only in the hunk).
    public var spansInstructions: [Bool]

    /// True when every check passed or was forced.
    public var passed: Bool { findings.allSatisfy { $0.passed || $0.forced } }
}

/// Runs the checks that need no stop: identity, bytes, function images, boundaries, atomicity.
public struct Preflight {
    public let target: MemoryTarget
    public let architecture: Architecture
    public let options: PreflightOptions

    /// Functions larger than this are read when the boundary check needs them, not fetched ahead.
    static let prefetchedFunctionLimit: UInt64 = 64 << 10

    /// What the byte and boundary checks read: each hunk, and the function it lies in.
    static func hunkAndFunctionRanges(_ hunks: [ResolvedHunk]) -> [Range<UInt64>] {
        hunks.map(\.range) + hunks.compactMap { h in
            guard let f = h.function, let size = f.size, size > 0, size <= prefetchedFunctionLimit else { return nil }
            return f.address..<(f.address + size)
        }
    }

    public init(target: MemoryTarget, architecture: Architecture, options: PreflightOptions) {
        self.target = target
        self.architecture = architecture
        self.options = options
    }

    public func run(bundle: PatchBundle, hunks: [ResolvedHunk], symbols: SymbolIndex?) throws -> PreflightReport {
        var findings: [PreflightFinding] = []
        findings.append(try IdentityCheck(expected: bundle.target).run(on: target))
        // Everything the checks below read, in one go: the hunks, the functions they sit in (for
        // the boundaries) and the whole-function images.
        var ranges = Self.hunkAndFunctionRanges(hunks)
        for image in bundle.functions ?? [] {
            if let symbol = try? symbols?.resolve(name: image.symbol, module: image.module, ordinal: image.ordinal) {
                ranges.append(symbol.address..<(symbol.address + UInt64(image.bytes.count)))
            }
        }
        let memory = try PrefetchedMemory(target: target, ranges: ranges)
        let (bytesFinding, live) = try ExpectedBytesCheck(hunks: hunks).run(on: memory)
        findings.append(bytesFinding)
        if let functions = bundle.functions, !functions.isEmpty {
            findings.append(try FunctionImageCheck(images: functions, symbols: symbols).run(on: memory))
        }
        let placement = HunkPlacementClassifier(target: target, symbols: symbols)
        let boundary = try BoundaryCheck(hunks: hunks, architecture: architecture, placement: placement).run(on: memory)
        findings.append(boundary.finding)
        if !target.capabilities.contains(.stop) {
            findings.append(AtomicStoreCheck(hunks: hunks, instructions: boundary.instructions, isData: boundary.isData,
                                             compareAndSwapLimit: target.capabilities.contains(.compareAndSwap) ? target.compareAndSwapLimit : 0).run())
        }
        for i in findings.indices where !findings[i].passed && options.force.contains(findings[i].check)
            && PreflightCheck.forceable.contains(findings[i].check) {
            findings[i].forced = true
        }
        return PreflightReport(findings: findings, live: live, spansInstructions: boundary.spans)
    }
}

/// 1. The target is what the bundle was made for: every identity field both sides know must agree.
struct IdentityCheck {
    let expected: TargetIdentity?

    func run(on target: MemoryTarget) throws -> PreflightFinding {
        let live = try target.identity()
        guard let expected else {
            return PreflightFinding(check: .identity, passed: false,
                                    detail: "the bundle names no target; live target is \(IdentityCheck.describe(live))")
        }
        var mismatches: [String] = []
        var compared: [String] = []
        func compare(_ field: String, _ a: String?, _ b: String?) {
            guard let a, let b else { return }
            compared.append(field)
            if a != b { mismatches.append("\(field): bundle \(a), target \(b)") }
        }
        if expected.kind != live.kind { mismatches.append("kind: bundle \(expected.kind.rawValue), target \(live.kind.rawValue)") }
        compare("release", expected.release, live.release)
        // A bundle made from a shared library names the library's build-id: it is for any process
        // that has that very file mapped.
        if expected.kind == .process, live.kind == .process, let wanted = expected.buildID, wanted != live.buildID,
           let process = target as? ProcessTarget,
           let library = (try? ProcessSymbols.images(pid: process.pid))?.first(where: { $0.buildID == wanted }) {
            return PreflightFinding(check: .identity, passed: true,
                                    detail: "\(library.displayName) (build-id \(wanted)) is mapped in \(target.name) (\(IdentityCheck.describe(live)))")
        }
        compare("build-id", expected.buildID, live.buildID)
        if expected.kind == .process || expected.kind == .file, expected.buildID == nil || live.buildID == nil {
            compare("path", expected.path, live.path)
        }
        if mismatches.isEmpty && compared.isEmpty {
            return PreflightFinding(check: .identity, passed: false,
                                    detail: "nothing to compare: bundle \(IdentityCheck.describe(expected)), target \(IdentityCheck.describe(live))")
        }
        return PreflightFinding(check: .identity, passed: mismatches.isEmpty,
                                detail: mismatches.isEmpty ? "\(IdentityCheck.describe(live)) (\(compared.joined(separator: ", ")) match)"
                                                           : mismatches.joined(separator: "; "))
    }

    static func describe(_ id: TargetIdentity) -> String {
        var parts = [id.kind.rawValue]
        if let r = id.release { parts.append(r) }
        if let p = id.path { parts.append(p) }
        if let b = id.buildID { parts.append("build-id \(b)") }
        return parts.joined(separator: " ")
    }
}

/// 2. Live bytes equal the expected bytes, outside masks.
struct ExpectedBytesCheck {
    let hunks: [ResolvedHunk]

    func run(on target: PrefetchedMemory) throws -> (PreflightFinding, [[UInt8]]) {
        var live: [[UInt8]] = []
        var problems: [String] = []
        for h in hunks {
            let bytes = try target.read(at: h.address, count: h.hunk.expected.count)
            live.append(bytes)
            if let i = Hunk.firstMismatch(bytes, h.hunk.expected, mask: h.hunk.mask) {
                let already = Hunk.firstMismatch(bytes, h.hunk.replacement, mask: h.hunk.mask) == nil
                problems.append("\(h.hunk.location) (\(Hex.address(h.address))): expected \(Hex.bytes(h.hunk.expected)), found \(Hex.bytes(bytes)) (first difference at byte \(i))"
                                + (already ? ": the patch looks already applied" : ""))
            }
        }
        let detail = problems.isEmpty
            ? "\(hunks.count) hunk\(hunks.count == 1 ? "" : "s"): " + zip(hunks, live).map { "\($0.hunk.location) = \(Hex.bytes($1))" }.joined(separator: ", ")
            : problems.joined(separator: "; ")
        return (PreflightFinding(check: .bytes, passed: problems.isEmpty, detail: detail), live)
    }
}

/// 2b. Run-pre match: whole functions equal the images the bundle's maker saw.
struct FunctionImageCheck {
    let images: [FunctionImage]
    let symbols: SymbolIndex?

    func run(on target: PrefetchedMemory) throws -> PreflightFinding {
        var problems: [String] = []
        var checked = 0
        for image in images {
            guard let symbols, let symbol = try? symbols.resolve(name: image.symbol, module: image.module, ordinal: image.ordinal) else {
                problems.append("\(image.symbol): not found on the target")
                continue
            }
            let live = try target.read(at: symbol.address, count: image.bytes.count)
            if let i = Hunk.firstMismatch(live, image.bytes, mask: image.mask) {
                problems.append("\(image.symbol)+\(Hex.address(UInt64(i))): expected \(Hex.bytes([image.bytes[i]])), found \(i < live.count ? Hex.bytes([live[i]]) : "nothing")")
            } else { checked += image.bytes.count }
        }
        return PreflightFinding(check: .function, passed: problems.isEmpty,
                                detail: problems.isEmpty ? "\(images.count) function\(images.count == 1 ? "" : "s") match (\(checked) bytes)"
                                                         : problems.joined(separator: "; "))
    }
}

/// 3. Each hunk lies inside one function and starts and ends on instruction boundaries of the live
/// function, and the replacement re-synchronises: its own instructions end exactly where the hunk ends.
struct BoundaryCheck {
    let hunks: [ResolvedHunk]
    let architecture: Architecture
    var placement: HunkPlacementClassifier? = nil

    struct Result {
        var finding: PreflightFinding
        /// Per hunk: the live instructions the hunk covers.
        var instructions: [[Instruction]]
        var spans: [Bool]
        /// Per hunk: it changes data, not code.
        var isData: [Bool] = []
    }

    func run(on target: PrefetchedMemory) throws -> Result {
        let disassembler = try Disassembler(architecture: architecture)
        var problems: [String] = []
        var covered: [[Instruction]] = []
        var spans: [Bool] = []
        var isData: [Bool] = []
        var notes: [String] = []
        for h in hunks {
            // Data has no instructions: it is written while every thread is stopped, and no
            // program counter can be inside it.
            // A hunk reached through a reference is a string literal (ObjectDiff makes them so) unless
            // the live mappings say the place is code.
            let viaReference: HunkPlacement? = h.hunk.symbol == nil && h.hunk.reference != nil
                ? .data(reason: "string literal reached through \(h.hunk.reference!.location)") : nil
            let placed = placement?.classify(h.range, function: h.function)
            if case let .data(reason)? = (placed == .code ? placed : (viaReference ?? placed)) {
                notes.append("\(h.hunk.location): data: no instruction boundaries (\(reason))")
                covered.append([]); spans.append(false); isData.append(true)
                continue
            }
            isData.append(false)
            guard let function = h.function, let size = function.size, size > 0 else {
                problems.append("\(h.hunk.location) (\(Hex.address(h.address))): no function symbol with a size covers it")
                covered.append([]); spans.append(true)
                continue
            }
            let end = function.address + size
            guard h.range.lowerBound >= function.address, h.range.upperBound <= end else {
                problems.append("\(h.hunk.location): \(Hex.address(h.range.lowerBound))..\(Hex.address(h.range.upperBound)) leaves \(function.name) (\(Hex.address(function.address))..\(Hex.address(end)))")
                covered.append([]); spans.append(true)
                continue
            }
            let code = try target.read(at: function.address, count: Int(size))
            let instructions = disassembler.decode(code, address: function.address)
            let starts = Set(instructions.map(\.address) + [end])
            let inside = instructions.filter { $0.address < h.range.upperBound && $0.address + UInt64($0.size) > h.range.lowerBound }
            covered.append(inside)
            spans.append(inside.count > 1)
            var bad: [String] = []
            if !starts.contains(h.range.lowerBound) { bad.append("starts inside an instruction") }
            if !starts.contains(h.range.upperBound) { bad.append("ends inside an instruction") }
            if !bad.isEmpty {
                let around = inside.map { "\(Hex.address($0.address - function.address)): \(Hex.bytes($0.bytes)) \($0.mnemonic) \($0.operands)" }
                problems.append("\(h.hunk.location) \(bad.joined(separator: " and ")) of \(function.name) (covers \(around.joined(separator: "; ")))")
                continue
            }
            // The new bytes must decode to whole instructions that end exactly at the hunk's end.
            let replaced = disassembler.decode(h.hunk.replacement, address: h.address)
            let replacedEnd = replaced.last.map { $0.address + UInt64($0.size) } ?? h.address
            if replaced.contains(where: \.isInvalid) || replacedEnd != h.range.upperBound {
                problems.append("\(h.hunk.location): the replacement \(Hex.bytes(h.hunk.replacement)) does not decode to whole instructions ending at \(Hex.address(h.range.upperBound))")
                continue
            }
            notes.append("\(h.hunk.location) = \(inside.map { "\($0.mnemonic) \($0.operands)".trimmingWhitespace() }.joined(separator: "; ")) → \(replaced.map { "\($0.mnemonic) \($0.operands)".trimmingWhitespace() }.joined(separator: "; ")) in \(function.name) (\(instructions.count) instructions decoded)")
        }
        // Several hunks in one function are one change spanning instructions (a compare and its
        // jump, a constant and its use): a thread between them would run half of it.
        var perFunction: [UInt64: [Int]] = [:]
        for (k, h) in hunks.enumerated() where !isData[k] {
            if let f = h.function { perFunction[f.address, default: []].append(k) }
        }
        for group in perFunction.values where group.count > 1 {
            for k in group { spans[k] = true }
        }
        return Result(finding: PreflightFinding(check: .boundaries, passed: problems.isEmpty,
                                                detail: problems.isEmpty ? notes.joined(separator: "; ") : problems.joined(separator: "; ")),
                      instructions: covered, spans: spans, isData: isData)
    }
}

/// 5. A target that cannot be stopped (kmem, mem) gets one naturally aligned 1/2/4/8-byte store that
/// lies inside one instruction: a CPU then sees either the old or the new instruction, never a mix.
struct AtomicStoreCheck {
    let hunks: [ResolvedHunk]
    let instructions: [[Instruction]]
    var isData: [Bool] = []
    /// Bytes the target swaps at once with every CPU held (`.compareAndSwap`), or 0.
    var compareAndSwapLimit = 0

    func run() -> PreflightFinding {
        let changed = hunks.filter { !$0.changedRange.isEmpty }
        guard changed.count == 1, let h = changed.first, let index = hunks.firstIndex(of: h) else {
            return PreflightFinding(check: .atomicity, passed: false,
                                    detail: "this target cannot be stopped: only one store is allowed, the bundle changes \(changed.count) places")
        }
        let range = h.changedRange
        let start = h.address + UInt64(range.lowerBound), length = UInt64(range.count)
        // A compare-and-swap target (the helper module) swaps the bytes with every CPU held and checks
        // no task is inside them, at any alignment; it does not know the function, so the change must
        // still stay inside one instruction, as a plain store must.
        let swaps = compareAndSwapLimit > 0
        let store = swaps ? "\(length)-byte compare-and-swap" : "\(length)-byte aligned store"
        if swaps, length > UInt64(compareAndSwapLimit) {
            return PreflightFinding(check: .atomicity, passed: false,
                                    detail: "this target swaps at most \(compareAndSwapLimit) bytes at once: the change at \(Hex.address(start)) is \(length) bytes")
        }
        if !swaps, ![1, 2, 4, 8].contains(length) || start % length != 0 {
            return PreflightFinding(check: .atomicity, passed: false,
                                    detail: "this target cannot be stopped: the change at \(Hex.address(start)) is \(length) bytes, not one naturally aligned 1, 2, 4 or 8-byte store")
        }
        let held = swaps ? ", every CPU held" : ""
        if index < isData.count, isData[index] {
            return PreflightFinding(check: .atomicity, passed: true, detail: "one \(store) of data at \(Hex.address(start))\(held)")
        }
        let inOne = instructions[index].contains { $0.address <= start && start + length <= $0.address + UInt64($0.size) }
        return PreflightFinding(check: .atomicity, passed: inOne,
                                detail: inOne ? "one \(store) at \(Hex.address(start)) inside one instruction\(held)"
                                              : "the change at \(Hex.address(start)) (\(length) bytes) spans several instructions"
                                                + (swaps ? ": this target checks only the written bytes for tasks inside them, not the function" : ""))
    }
}
