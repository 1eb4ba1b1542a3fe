import ELF
import Disassembly

/// Turns compared units into hunks, or into the reasons they cannot be made in place.
struct ObjectDiffHunkBuilder {
    let a: ObjectDiffSide
    let b: ObjectDiffSide
    /// Of the original file: live bytes differ from it there, so hunks mask them.
    let sites: RuntimeSites
    let module: String?
    let disassembler: Disassembler?
    /// The shipped module an object file is linked into, which judges its string edits.
    let linked: LinkedModuleStrings?
    private(set) var images: [FunctionImage] = []

    init(a: ObjectDiffSide, b: ObjectDiffSide, sites: RuntimeSites, module: String?, disassembler: Disassembler?,
         linked: LinkedModuleStrings? = nil) {
        self.linked = linked
        self.a = a
        self.b = b
        self.sites = sites
        self.module = module
        self.disassembler = disassembler
    }

    // MARK: Code

    /// Same-length byte changes become hunks covering whole instructions (of both versions); any
    /// other difference makes the function not applicable, with each reason.
    mutating func makeHunks(_ change: inout ObjectDiff.Change, result: ObjectDiffComparator.Result) throws(ObjectDiffError) {
        let unit = change.original
        var reasons: [String] = []
        var changed: [Range<Int>] = []
        for difference in change.differences {
            let at = "+" + Hex.address(UInt64(difference.range.lowerBound))
            switch difference.kind {
            case .bytes: changed.append(difference.range)
            case .string: continue        // a string edit, judged with the strings
            case let .reference(original, patched):
                reasons.append("\(at): refers to \(patched) instead of \(original): the reference was resolved when the code was "
                               + "loaded, and an in-place patch cannot resolve a new one")
            case let .layout(text):
                reasons.append("\(at): \(text)")
            case let .size(original, patched):
                reasons.append("size changed from \(original) to \(patched) bytes: an in-place patch keeps every function's length "
                               + "(a longer function needs a new copy and a jump to it)")
            }
        }
        guard reasons.isEmpty else { change.notApplicable = reasons; return }
        guard !changed.isEmpty else { return }
        guard let before = change.originalInstructions, let after = change.patchedInstructions else {
            change.notApplicable = ["no disassembler for this machine: instruction boundaries unknown"]
            return
        }

        // Widen each change to boundaries both versions share, so that every hunk replaces whole
        // instructions with whole instructions.
        let size = Int(unit.size)
        let startsA = Set(before.map { Int($0.address - unit.address) } + [size])
        let common = startsA.intersection(after.map { Int($0.address - change.patched.address) } + [size]).sorted()
        var runs: [Range<Int>] = []
        for range in changed.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            let low = common.last { $0 <= range.lowerBound } ?? 0
            let high = common.first { $0 >= range.upperBound } ?? size
            if let last = runs.last, low < last.upperBound {
                runs[runs.count - 1] = last.lowerBound..<max(last.upperBound, high)
            } else {
                runs.append(low..<high)
            }
        }

        let original = try a.bytes(of: unit).bytes
        let patched = try b.bytes(of: change.patched).bytes
        let section = a.section(unit.sectionIndex)
        var hunks: [Hunk] = []
        for run in runs {
            let expected = Array(original[run])
            // Only the changed bytes come from the patched file: relocated fields and branches that
            // mean the same keep the original's bytes (the patched file's would be wrong live).
            var replacement = expected
            for range in changed where range.overlaps(run) {
                for k in max(range.lowerBound, run.lowerBound)..<min(range.upperBound, run.upperBound) {
                    replacement[k - run.lowerBound] = patched[k]
                }
            }
            let mask = sites.mask(section: section, range: unit.offset + UInt64(run.lowerBound)..<unit.offset + UInt64(run.upperBound))
            for k in mask.indices where mask[k] != 0xff && expected[k] != replacement[k] {
                let offset = unit.offset + UInt64(run.lowerBound + k)
                let why = sites.explain(section: section, offset: offset).map { "\($0.table) (\($0.table.meaning))" } ?? "a runtime site"
                reasons.append("+\(Hex.address(UInt64(run.lowerBound + k))): changes a byte the kernel rewrites at load: \(why)")
            }
            hunks.append(Hunk(symbol: unit.name, module: module, ordinal: unit.ordinal, offset: UInt64(run.lowerBound),
                              expected: expected, replacement: replacement,
                              mask: mask.allSatisfy { $0 == 0xff } ? nil : mask))
        }
        guard reasons.isEmpty else { change.notApplicable = reasons; return }
        change.hunks = hunks
        images.append(FunctionImage(symbol: unit.name, module: module, ordinal: unit.ordinal, bytes: original,
                                    mask: sites.mask(section: section, range: unit.offset..<unit.offset + unit.size)))
    }

    // MARK: Data

    /// Data objects are reported, not patched: only their string references can be.
    func judgeObject(_ change: inout ObjectDiff.Change) {
        for difference in change.differences {
            let at = "+" + Hex.address(UInt64(difference.range.lowerBound))
            switch difference.kind {
            case .string: continue
            case let .size(original, patched):
                change.notApplicable.append("size changed from \(original) to \(patched) bytes: the data layout changed")
            case let .reference(original, patched):
                change.notApplicable.append("\(at): points to \(patched) instead of \(original): in-place patches change code and string literals only")
            case let .layout(text):
                change.notApplicable.append("\(at): \(text)")
            case .bytes:
                change.notApplicable.append("\(at) (\(difference.range.count) bytes): data changed: in-place patches change code and "
                                            + "string literals only (the live value may no longer be the file's)")
            }
        }
    }

    // MARK: Strings

    private struct Use {
        var unit: ObjectDiff.Unit
        var field: Int
        var relocation: Relocation?
        var bias: Int64
    }

    /// Groups the string differences by the original string, and makes a hunk for each one that
    /// keeps its length, is in a linked module, and is used by nothing else.
    func stringEdits(results: [ObjectDiffComparator.Result], pairs: [(Int, Int)], isModule: Bool) -> [ObjectDiff.StringEdit] {
        struct Place: Hashable, Comparable {
            var section: Int
            var offset: UInt64
            static func < (x: Place, y: Place) -> Bool { (x.section, x.offset) < (y.section, y.offset) }
        }
        var groups: [Place: (original: [UInt8], patched: [UInt8], uses: [Use], conflicting: Bool)] = [:]
        for (k, (i, _)) in pairs.enumerated() {
            for use in results[k].strings {
                let place = Place(section: use.originalPlace.section, offset: use.originalPlace.offset)
                let entry = Use(unit: a.units[i], field: use.range.lowerBound, relocation: use.relocation, bias: use.bias)
                if var group = groups[place] {
                    if group.patched != use.patched { group.conflicting = true }
                    group.uses.append(entry)
                    groups[place] = group
                } else {
                    groups[place] = (use.original, use.patched, [entry], false)
                }
            }
        }
        var edits: [ObjectDiff.StringEdit] = []
        for place in groups.keys.sorted() {
            let group = groups[place]!
            var edit = ObjectDiff.StringEdit(section: a.section(place.section).name, offset: place.offset, original: group.original,
                                             patched: group.patched,
                                             references: group.uses.map { "\($0.unit.displayName)+\(Hex.address(UInt64($0.field)))" },
                                             hunk: nil, notApplicable: nil)
            if group.conflicting {
                edit.notApplicable = "its references now use different strings: one string cannot become both"
            } else if group.original.count != group.patched.count {
                edit.notApplicable = "length changed from \(group.original.count) to \(group.patched.count) bytes: a string is patched "
                    + "in place only at the same length"
            } else if !a.isRelocatable {
                edit.notApplicable = "strings of linked programs are not patched in place yet"
            } else if let linked {
                // An object of a module: the shipped .ko decides, since the linker may have merged
                // this string with other objects' equal (or longer) strings.
                switch judge(group.uses, original: group.original, in: linked) {
                case let .refused(reason): edit.notApplicable = reason
                case let .unique(use, unit, encoding):
                    edit.hunk = Hunk(symbol: nil, offset: 0, expected: group.original + [0], replacement: group.patched + [0],
                                     reference: HunkReference(symbol: unit.name, module: module, ordinal: unit.ordinal,
                                                              field: UInt64(use.field), encoding: encoding, bias: use.bias))
                }
            } else if !isModule {
                edit.notApplicable = "in a relocatable object the string may still be merged with equal strings of other objects "
                    + "when linked, and no linked module (.ko) was given to tell: give it (suture diff --linked-module KO), "
                    + "or build for a kernel whose shipped modules Suture has (suture build --debian-kernel)"
            } else if let others = sharers(of: place.section, range: place.offset..<place.offset + UInt64(group.original.count) + 1,
                                           uses: group.uses), !others.isEmpty {
                edit.notApplicable = "other code or data refers to these bytes too (\(others.prefix(4).joined(separator: ", "))"
                    + (others.count > 4 ? ", …" : "") + "): the linker merged or suffix-shared them, and changing them would change that too"
            } else if let (use, encoding) = anchor(group.uses) {
                edit.hunk = Hunk(symbol: nil, offset: 0, expected: group.original + [0], replacement: group.patched + [0],
                                 reference: HunkReference(symbol: use.unit.name, module: module, ordinal: use.unit.ordinal,
                                                          field: UInt64(use.field), encoding: encoding, bias: use.bias))
            } else {
                edit.notApplicable = "referenced only through relocation types Suture cannot follow live ("
                    + Set(group.uses.compactMap { $0.relocation?.typeName }).sorted().joined(separator: ", ") + ")"
            }
            edits.append(edit)
        }
        return edits
    }

    private enum LinkedJudgement {
        case unique(Use, ObjectDiff.Unit, HunkReference.Encoding)
        case refused(String)
    }

    /// The linked module's verdict on a string, and the reference the hunk follows: the anchor's
    /// field, named by the `.ko`'s unit (its ordinal is the live one, not the object's).
    private func judge(_ uses: [Use], original: [UInt8], in linked: LinkedModuleStrings) -> LinkedJudgement {
        var fields: [LinkedModuleStrings.Use] = []
        for use in uses {
            guard let relocation = use.relocation else {
                return .refused("\(use.unit.displayName)+\(Hex.address(UInt64(use.field))) refers to it without a relocation, "
                                + "which the linked module cannot match")
            }
            fields.append(.init(unit: use.unit, field: use.field, relocation: relocation, bias: use.bias))
        }
        guard let (anchor, encoding) = anchor(uses) else {
            return .refused("referenced only through relocation types Suture cannot follow live ("
                            + Set(uses.compactMap { $0.relocation?.typeName }).sorted().joined(separator: ", ") + ")")
        }
        switch linked.judge(uses: fields, original: original) {
        case let .refused(reason): return .refused(reason)
        case let .unique(units):
            guard let k = uses.firstIndex(where: { $0.unit == anchor.unit && $0.field == anchor.field }) else {
                return .refused("internal: the anchor is not among the uses")
            }
            return .unique(anchor, units[k], encoding)
        }
    }

    /// A reference the engine can follow live: a function's first, else any.
    private func anchor(_ uses: [Use]) -> (Use, HunkReference.Encoding)? {
        let ordered = uses.filter { $0.unit.kind == .function } + uses.filter { $0.unit.kind != .function }
        for use in ordered {
            guard let relocation = use.relocation else { continue }
            switch relocation.typeName {
            case "R_X86_64_PC32", "R_X86_64_PLT32": return (use, .pc32)
            case "R_X86_64_32S": return (use, .abs32s)
            case "R_X86_64_64": return (use, .abs64)
            default: continue
            }
        }
        return nil
    }

    /// Places in the original file, other than `uses`, whose references may land in `range` of the
    /// string section (PC-relative fields in code within their 4-to-8-byte window).
    private func sharers(of section: Int, range: Range<UInt64>, uses: [Use]) -> [String]? {
        let own = Set(uses.map { "\($0.unit.sectionIndex):\($0.unit.offset + UInt64($0.field))" })
        var result: [String] = []
        for (target, relocation) in a.allRelocations() {
            guard relocation.symbolIndex != 0, Int(relocation.symbolSectionIndex) == section,
                  ObjectDiffComparator.isPlaceBased(relocation, side: a) || relocation.symbolType == .object else { continue }
            let base = Int64(bitPattern: relocation.symbolValue) &+ relocation.addend
            let code = a.section(target).isExecutable && ObjectDiffComparator.isPCRelative(relocation, machine: a.file.header.machine)
            let low = base + (code ? 4 : 0), high = base + (code ? 8 : 0)
            guard high >= Int64(range.lowerBound), low < Int64(range.upperBound) else { continue }
            if own.contains("\(target):\(relocation.offset)") { continue }
            let where_ = a.unit(containing: relocation.offset, in: target).map { i in
                "\(a.units[i].displayName)+\(Hex.address(relocation.offset - a.units[i].offset))"
            } ?? "\(a.section(target).name)+\(Hex.address(relocation.offset))"
            result.append(where_)
        }
        return result
    }
}
