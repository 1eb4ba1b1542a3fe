import ELF
import Disassembly
import Targets

/// The difference between two builds of the same code (two `.o`, two `.ko`, or two executables or
/// shared libraries), function by function, and the bundle that makes it in place when it can.
///
/// Functions and data objects are paired by name (same-named static ones by order and size) and
/// compared relocation-aware: a relocated field, a direct branch or a RIP-relative operand counts by
/// what it points to — a symbol and offset, a place inside a paired function or object, a string
/// literal's content, or a section offset net of that section's common shift — so code that merely
/// moved is equal and a changed constant, condition or string is found.
///
/// Same-length changes of code become hunks (`symbol+offset`, whole instructions, expected and
/// replacement bytes, and a mask of the bytes the kernel rewrites at load); same-length string
/// literal changes of a linked module or program become hunks reached through a reference from the
/// code. Everything else is reported with the reason it cannot be made in place.
public struct ObjectDiff: Sendable {
    public struct Options: Sendable {
        /// The module the code runs in, for a `.o` that is part of a module (a `.ko` names itself).
        public var module: String?
        /// For an object file: the linked module (`.ko`) it is part of, as shipped. Its string
        /// literals are then patched only when the linked module shows nothing else refers to
        /// them (`LinkedModuleStrings`); without it they are refused, since the linker may have
        /// merged them with other objects' strings.
        public var linkedModule: ELFFile?
        public init(module: String? = nil, linkedModule: ELFFile? = nil) {
            self.module = module
            self.linkedModule = linkedModule
        }
    }

    /// A function or data object of one file.
    public struct Unit: Sendable, Hashable, Codable {
        public enum Kind: String, Sendable, Hashable, Codable { case function, object }
        public var name: String
        public var kind: Kind
        public var section: String
        public var sectionIndex: Int
        /// From the start of its section.
        public var offset: UInt64
        /// Section address plus offset (the offset again in a relocatable file).
        public var address: UInt64
        public var size: UInt64
        /// 1-based among same-named units of the file (section, then offset order), when there are several.
        public var ordinal: Int?

        /// `name`, or `name/2` among same-named ones.
        public var displayName: String { ordinal.map { "\(name)/\($0)" } ?? name }
    }

    /// One difference inside a paired unit, at unit-relative bytes (of the original).
    public struct Difference: Sendable, Hashable {
        public enum Kind: Sendable, Hashable {
            /// Code or data bytes differ (outside every relocated field).
            case bytes
            /// A relocated field, branch or RIP-relative operand points somewhere else.
            case reference(original: String, patched: String)
            /// A referenced string literal's content differs.
            case string(original: [UInt8], patched: [UInt8])
            /// A relocation or reference on one side has no counterpart on the other.
            case layout(String)
            case size(original: UInt64, patched: UInt64)
        }
        public var range: Range<Int>
        public var kind: Kind
    }

    /// A changed function or object.
    public struct Change: Sendable {
        public var original: Unit
        public var patched: Unit
        public var differences: [Difference]
        /// The in-place hunks, when the change is applicable.
        public var hunks: [Hunk]
        /// Why the change cannot be made in place (empty when it can).
        public var notApplicable: [String]
        public var isApplicable: Bool { notApplicable.isEmpty }

        /// Both versions decoded, for listings (functions only).
        var originalInstructions: [Instruction]?
        var patchedInstructions: [Instruction]?
        /// Relocations as objdump -dr shows them, by address, for listings.
        var originalAnnotations: [UInt64: [String]] = [:]
        var patchedAnnotations: [UInt64: [String]] = [:]
        /// Names of the places direct branches lead to outside the function, by address.
        var originalTargets: [UInt64: String] = [:]
        var patchedTargets: [UInt64: String] = [:]
    }

    /// A string literal whose content differs, found through the code or data that refers to it.
    public struct StringEdit: Sendable, Hashable {
        /// Where the string is in the original file.
        public var section: String
        public var offset: UInt64
        public var original: [UInt8]
        public var patched: [UInt8]
        /// `nfs_flock+0x20`: each place that refers to it.
        public var references: [String]
        public var hunk: Hunk?
        public var notApplicable: String?
    }

    public let originalPath: String
    public let patchedPath: String
    public let architecture: Architecture?
    /// The module the hunks name (`nfs`), nil for built-in code and programs.
    public let module: String?
    public let target: TargetIdentity?
    /// Changed functions, in the original's order.
    public private(set) var functions: [Change] = []
    /// Changed data objects.
    public private(set) var objects: [Change] = []
    public private(set) var strings: [StringEdit] = []
    public private(set) var added: [Unit] = []
    public private(set) var removed: [Unit] = []
    public private(set) var unchangedFunctions = 0
    /// The original functions that hunks change, whole, with masks (run-pre match).
    public private(set) var images: [FunctionImage] = []

    // MARK: Comparing

    public init(original: ELFFile, patched: ELFFile, options: Options = Options()) throws(ObjectDiffError) {
        originalPath = original.path
        patchedPath = patched.path
        guard original.header.machine == patched.header.machine else {
            throw .incompatible(original: original.path, patched: patched.path,
                                reason: "machines differ (\(original.header.machine) and \(patched.header.machine))")
        }
        guard (original.header.type == .relocatable) == (patched.header.type == .relocatable) else {
            throw .incompatible(original: original.path, patched: patched.path,
                                reason: "one is a relocatable object and the other \(patched.header.type == .relocatable ? original.header.type : patched.header.type)")
        }
        let a = try ObjectDiffSide(file: original), b = try ObjectDiffSide(file: patched)
        guard !a.units.isEmpty, !b.units.isEmpty else {
            throw .incompatible(original: original.path, patched: patched.path,
                                reason: "\(a.units.isEmpty ? original.path : patched.path) has no function or object symbols (stripped?)")
        }
        let architecture = Architecture(elfMachine: original.header.machine.rawValue)
        self.architecture = architecture
        let module = options.module ?? a.moduleName()
        self.module = module
        if let release = a.vermagicRelease() {
            target = TargetIdentity(kind: .kernel, release: release)
        } else if !a.isRelocatable {
            target = TargetIdentity(kind: .process, buildID: (try? original.buildID()).flatMap { $0 }.map { Hex.bytes($0, separator: "") })
        } else {
            target = nil
        }

        let pairing = UnitPairing(a.units, b.units)
        var disassembler: Disassembler?
        if let architecture {
            do { disassembler = try Disassembler(architecture: architecture) } catch {
                throw .disassembler(file: original.path, reason: "\(error)")
            }
        }
        let comparator = ObjectDiffComparator(a: a, b: b, pairOfA: pairing.pairOfA, pairOfB: pairing.pairOfB,
                                              pairNames: pairing.names, disassembler: disassembler, architecture: architecture)
        var results: [ObjectDiffComparator.Result] = []
        results.reserveCapacity(pairing.pairs.count)
        for (i, j) in pairing.pairs { results.append(try comparator.compare(original: i, patched: j)) }

        // Anonymous references: equal when they moved with the rest of their section.
        var shifts: [String: [Int64: Int]] = [:]
        for result in results { for use in result.anonymous { shifts[use.section, default: [:]][Int64(bitPattern: use.patched &- use.original), default: 0] += 1 } }
        // The most frequent shift per section; ties go to the smaller one.
        let commonShift = shifts.mapValues { counts in
            counts.max { ($0.value, $1.key.magnitude) < ($1.value, $0.key.magnitude) }!.key
        }
        for k in results.indices {
            for use in results[k].anonymous {
                if Int64(bitPattern: use.patched &- use.original) == commonShift[use.section] {
                    results[k].equivalent.append(use.range)
                } else {
                    results[k].differences.append(.init(range: use.range, kind: .reference(
                        original: "\(use.section)+\(Hex.address(use.original))", patched: "\(use.section)+\(Hex.address(use.patched))")))
                }
            }
            results[k].differences.sort { $0.range.lowerBound < $1.range.lowerBound }
        }

        // The runtime sites (masks) are needed only when some function changed.
        let needSites = zip(pairing.pairs, results).contains { pair, result in
            a.units[pair.0].kind == .function && !result.differences.isEmpty
        }
        var sites = RuntimeSites(file: original.path, sites: [], skipped: [:])
        if needSites {
            do { sites = try RuntimeSites(object: original) } catch { throw .runtimeSites(error) }
        }
        var linked: LinkedModuleStrings?
        if a.isRelocatable, let file = options.linkedModule { linked = try LinkedModuleStrings(file: file) }
        var builder = ObjectDiffHunkBuilder(a: a, b: b, sites: sites, module: module, disassembler: disassembler, linked: linked)
        for (k, (i, j)) in pairing.pairs.enumerated() {
            let result = results[k]
            let differences = result.differences
            if differences.isEmpty {
                if a.units[i].kind == .function { unchangedFunctions += 1 }
                continue
            }
            var change = Change(original: a.units[i], patched: b.units[j], differences: differences, hunks: [],
                                notApplicable: [], originalInstructions: result.originalInstructions,
                                patchedInstructions: result.patchedInstructions)
            if change.original.kind == .function {
                change.originalAnnotations = Self.annotations(a, change.original, result.originalInstructions ?? [])
                change.patchedAnnotations = Self.annotations(b, change.patched, result.patchedInstructions ?? [])
                change.originalTargets = Self.branchTargets(a, change.original, result.originalInstructions ?? [])
                change.patchedTargets = Self.branchTargets(b, change.patched, result.patchedInstructions ?? [])
                try builder.makeHunks(&change, result: result)
                functions.append(change)
            } else {
                builder.judgeObject(&change)
                objects.append(change)
            }
        }
        strings = builder.stringEdits(results: results, pairs: pairing.pairs, isModule: a.file.section(named: ".modinfo") != nil
                                        || a.file.section(named: ".gnu.linkonce.this_module") != nil)
        images = builder.images
        if !a.isRelocatable { try compareUnnamedData(a, b) }
        removed = pairing.removedA.map { a.units[$0] }
        added = pairing.addedB.map { b.units[$0] }
    }

    /// `R_X86_64_PLT32\tlocks_lock_inode_wait-0x4` per relocated address of a unit.
    /// Linked programs keep no relocations to their string literals and constants, so a changed
    /// string at an unchanged place would go unseen by the references: compare the bytes of
    /// read-only data outside every symbol directly (sections of the same size only).
    private mutating func compareUnnamedData(_ a: ObjectDiffSide, _ b: ObjectDiffSide) throws(ObjectDiffError) {
        for section in a.file.sections where section.isAllocated && !section.isExecutable && !section.isWritable
            && section.type == ELFConstants.SHT_PROGBITS && section.size > 0 {
            guard let other = b.file.section(named: section.name), other.size == section.size,
                  a.relocations(in: section.index, range: 0..<section.size).isEmpty else { continue }
            let x: [UInt8], y: [UInt8]
            do { x = try a.file.data(of: section).bytes; y = try b.file.data(of: other).bytes } catch { throw .elf(error) }
            guard x != y else { continue }
            var covered = [Bool](repeating: false, count: x.count)
            for unit in a.units where unit.sectionIndex == section.index {
                for k in Int(unit.offset)..<Int(unit.offset + unit.size) { covered[k] = true }
            }
            var k = 0
            while k < x.count {
                guard !covered[k], x[k] != y[k] else { k += 1; continue }
                // The run of differing bytes, widened to the NUL-terminated strings around it.
                var start = k, end = k
                while end < x.count, !covered[end], x[end] != y[end] || (end > k && x[end] != 0) { end += 1 }
                while start > 0, !covered[start - 1], x[start - 1] != 0, y[start - 1] != 0 { start -= 1 }
                let printable = { (bytes: ArraySlice<UInt8>) in bytes.allSatisfy { (0x20...0x7e).contains($0) || $0 == 0x09 || $0 == 0x0a } }
                if printable(x[start..<end]), printable(y[start..<end]), end < x.count, x[end] == 0, y[end] == 0 {
                    // Same place, same length, in a linked image: patch the bytes, NUL included.
                    let hunk = a.linkedDataHunk(section: section, offset: UInt64(start), original: Array(x[start...end]),
                                                patched: Array(y[start...end]), module: module)
                    strings.append(StringEdit(section: section.name, offset: UInt64(start), original: Array(x[start..<end]),
                                              patched: Array(y[start..<end]), references: [], hunk: hunk,
                                              notApplicable: hunk == nil ? "no symbol of the file lies at or below it to name its place" : nil))
                } else {
                    let unit = Unit(name: "\(section.name)+\(Hex.address(UInt64(start)))", kind: .object, section: section.name,
                                    sectionIndex: section.index, offset: UInt64(start), address: section.address + UInt64(start),
                                    size: UInt64(end - start), ordinal: nil)
                    objects.append(Change(original: unit, patched: unit, differences: [Difference(range: 0..<end - start, kind: .bytes)],
                                          hunks: [], notApplicable: ["\(end - start) bytes of unnamed read-only data changed: "
                                                                     + "in-place patches change code and string literals only"]))
                }
                k = max(end, k + 1)
            }
        }
    }

    /// A string literal's text follows its relocation, since the placeholder bytes do not show it.
    private static func annotations(_ side: ObjectDiffSide, _ unit: Unit, _ instructions: [Instruction]) -> [UInt64: [String]] {
        var result: [UInt64: [String]] = [:]
        let base = side.section(unit.sectionIndex).address
        var k = 0
        for r in side.relocations(in: unit.sectionIndex, range: unit.offset..<unit.offset + unit.size) {
            let addend = r.addend == 0 ? "" : (r.addend < 0 ? "-" : "+") + Hex.address(r.addend.magnitude)
            var line = r.typeName + "\t" + (r.symbolIndex == 0 ? "*ABS*" : r.symbolName) + addend
            let section = Int(r.symbolSectionIndex)
            if r.symbolIndex != 0, side.isStringSection(section) {
                var bias: Int64 = 0
                if ObjectDiffComparator.isPCRelative(r, machine: side.file.header.machine) {
                    while k < instructions.count, instructions[k].endAddress <= base + r.offset { k += 1 }
                    if k < instructions.count { bias = Int64(instructions[k].endAddress - (base + r.offset)) }
                }
                let value = Int64(bitPattern: side.isRelocatable ? r.symbolValue : r.symbolValue &- side.section(section).address)
                let at = value &+ r.addend &+ bias
                if at >= 0, let text = side.string(in: section, at: UInt64(at)) { line += "\t" + quote(text) }
            }
            result[base + r.offset, default: []].append(line)
        }
        return result
    }

    /// `helper`, `helper+0x8`: where direct branches out of the function lead.
    private static func branchTargets(_ side: ObjectDiffSide, _ unit: Unit, _ instructions: [Instruction]) -> [UInt64: String] {
        var result: [UInt64: String] = [:]
        let base = side.section(unit.sectionIndex).address
        for insn in instructions {
            guard let target = insn.target, target < unit.address || target >= unit.address + unit.size else { continue }
            let found: (Int, UInt64)? = side.isRelocatable ? (target >= base ? (unit.sectionIndex, target - base) : nil) : side.locate(target)
            guard let (section, offset) = found, let i = side.unit(containing: offset, in: section) else { continue }
            let other = side.units[i]
            result[target] = offset == other.offset ? other.displayName : other.displayName + "+" + Hex.address(offset - other.offset)
        }
        return result
    }

    // MARK: Results

    /// True when nothing differs: same functions, same code, same data, same strings.
    public var isEmpty: Bool {
        functions.isEmpty && objects.isEmpty && strings.isEmpty && added.isEmpty && removed.isEmpty
    }

    /// Every reason the difference cannot be made in place, one line each (`nfs_flock: ...`).
    public var notApplicable: [String] {
        var reasons: [String] = []
        for change in functions + objects {
            for reason in change.notApplicable { reasons.append("\(change.original.displayName): \(reason)") }
        }
        for edit in strings { if let reason = edit.notApplicable { reasons.append("string \(Self.quote(edit.original)): \(reason)") } }
        for unit in added {
            reasons.append("\(unit.displayName): \(unit.kind == .function ? "function" : "object") added: new code or data cannot be placed in place")
        }
        for unit in removed {
            reasons.append("\(unit.displayName): \(unit.kind == .function ? "function" : "object") removed: its callers would have to change")
        }
        return reasons
    }

    /// Every hunk: code first (in the original's order), then strings.
    public var hunks: [Hunk] {
        functions.flatMap(\.hunks) + strings.compactMap(\.hunk)
    }

    /// The bundle making the whole difference in place, or an error listing why it cannot.
    public func bundle(description: String? = nil) throws(ObjectDiffError) -> PatchBundle {
        let reasons = notApplicable
        guard reasons.isEmpty else { throw .notApplicable(original: originalPath, patched: patchedPath, reasons: reasons) }
        let hunks = self.hunks
        guard !hunks.isEmpty else { throw .nothingToPatch(original: originalPath, patched: patchedPath) }
        return PatchBundle(description: description ?? "suture diff \(originalPath) \(patchedPath)", target: target,
                           architecture: architecture?.rawValue, hunks: hunks, functions: images.isEmpty ? nil : images)
    }

    /// `"NFS: flock\n"` with C escapes, for reports.
    static func quote(_ bytes: [UInt8]) -> String {
        var text = "\""
        for byte in bytes {
            switch byte {
            case 0x0a: text += "\\n"
            case 0x09: text += "\\t"
            case 0x22: text += "\\\""
            case 0x5c: text += "\\\\"
            case 0x20..<0x7f: text.unicodeScalars.append(Unicode.Scalar(byte))
            default: text += "\\x" + Hex.padded(UInt64(byte), width: 2)
            }
        }
        return text + "\""
    }
}
