import Foundation
import ELF
import Disassembly

/// How `ObjectDiff.render` lays out each changed function's instructions.
public enum ObjectDiffStyle: Sendable {
    /// `-`/`+` lines with three instructions of context, like `diff -u`.
    case unified
    /// Original on the left, patched on the right, `|` `<` `>` between them, like `diff -y`.
    case sideBySide(width: Int)
}

extension ObjectDiff {
    // MARK: Text

    /// The report: a summary, each changed function as an instruction-level diff, data and string
    /// changes, the hunks, and what cannot be made in place. ANSI colours when `color` (the CLI asks
    /// for them on a terminal only).
    public func render(style: ObjectDiffStyle = .unified, color: Bool = false) -> String {
        let paint = Painter(enabled: color)
        var out = ""
        out += paint.bold("--- \(originalPath)\n+++ \(patchedPath)\n")
        var summary = "functions: \(functions.count) changed, \(added.filter { $0.kind == .function }.count) added, "
            + "\(removed.filter { $0.kind == .function }.count) removed, \(unchangedFunctions) unchanged"
        summary += "; objects: \(objects.count) changed, \(added.filter { $0.kind == .object }.count) added, "
            + "\(removed.filter { $0.kind == .object }.count) removed; strings: \(strings.count) changed"
        if let module { summary += "; module \(module)" }
        out += summary + "\n"
        if isEmpty {
            out += "no differences\n"
            return out
        }
        for change in functions {
            out += "\n" + paint.cyan("@@ \(change.original.displayName) (\(change.original.section)+\(Hex.address(change.original.offset)), "
                                     + "\(change.original.size) bytes"
                                     + (change.patched.size != change.original.size ? " → \(change.patched.size)" : "") + ") @@")
            out += change.isApplicable ? (change.hunks.isEmpty ? " strings only\n" : " in place: \(change.hunks.count) hunk\(change.hunks.count == 1 ? "" : "s")\n")
                                       : " " + paint.red("not applicable in place") + "\n"
            out += listing(change, style: style, paint: paint)
        }
        for change in objects {
            out += "\n" + paint.cyan("@@ object \(change.original.displayName) (\(change.original.section)+\(Hex.address(change.original.offset)), "
                                     + "\(change.original.size) bytes) @@") + "\n"
            for difference in change.differences {
                out += "  +\(Hex.address(UInt64(difference.range.lowerBound))) (\(difference.range.count) bytes): \(Self.describe(difference.kind))\n"
            }
        }
        for edit in strings {
            out += "\n" + paint.cyan("@@ string \(edit.section)+\(Hex.address(edit.offset)) @@")
                + (edit.references.isEmpty ? "\n" : " used by " + edit.references.joined(separator: ", ") + "\n")
            out += paint.red("-" + Self.quote(edit.original)) + "\n" + paint.green("+" + Self.quote(edit.patched)) + "\n"
        }
        if !added.isEmpty || !removed.isEmpty { out += "\n" }
        for unit in removed { out += paint.red("- \(unit.kind.rawValue) \(unit.displayName) (\(unit.section), \(unit.size) bytes) removed") + "\n" }
        for unit in added { out += paint.green("+ \(unit.kind.rawValue) \(unit.displayName) (\(unit.section), \(unit.size) bytes) added") + "\n" }

        let hunks = self.hunks
        if !hunks.isEmpty {
            out += "\nhunks:\n"
            for hunk in hunks {
                out += "  \(hunk.location): \(Hex.bytes(hunk.expected)) → \(Hex.bytes(hunk.replacement))"
                if let mask = hunk.mask { out += " (mask \(Hex.bytes(mask)))" }
                out += "\n"
            }
        }
        let reasons = notApplicable
        if !reasons.isEmpty {
            out += "\n" + paint.red("not applicable in place:") + "\n"
            for reason in reasons { out += "  \(reason)\n" }
        }
        return out
    }

    static func describe(_ kind: Difference.Kind) -> String {
        switch kind {
        case .bytes: return "bytes differ"
        case let .reference(original, patched): return "refers to \(patched) instead of \(original)"
        case let .string(original, patched): return "string \(quote(original)) → \(quote(patched))"
        case let .layout(text): return text
        case let .size(original, patched): return "size \(original) → \(patched)"
        }
    }

    // MARK: Instruction listings

    private enum Line {
        case same(Instruction, Instruction)
        case removed(Instruction)
        case added(Instruction)
    }

    private func listing(_ change: Change, style: ObjectDiffStyle, paint: Painter) -> String {
        guard let before = change.originalInstructions, let after = change.patchedInstructions else {
            // No decoder: byte ranges only.
            var out = ""
            for difference in change.differences {
                out += "  +\(Hex.address(UInt64(difference.range.lowerBound)))..+\(Hex.address(UInt64(difference.range.upperBound))): "
                    + Self.describe(difference.kind) + "\n"
            }
            return out
        }
        let lines = align(change, before, after)
        let symbolizeA = symbolizer(change.original, change.originalTargets)
        let symbolizeB = symbolizer(change.patched, change.patchedTargets)
        func text(_ insn: Instruction, original: Bool) -> String {
            let all = original ? change.originalAnnotations : change.patchedAnnotations
            let annotations = all.filter { $0.key >= insn.address && $0.key < insn.endAddress }
            var rendered = Listing(instructions: [insn], addressWidth: 6, symbolize: original ? symbolizeA : symbolizeB,
                                   annotations: annotations,
                                   architecture: architecture ?? .x86_64).render()
            if rendered.hasSuffix("\n") { rendered.removeLast() }
            return rendered
        }
        // Context: three instructions around each change.
        var show = [Bool](repeating: false, count: lines.count)
        for (k, line) in lines.enumerated() {
            if case .same = line { continue }
            for m in max(0, k - 3)...min(lines.count - 1, k + 3) { show[m] = true }
        }
        var out = ""
        var skipped = false
        switch style {
        case .unified:
            for (k, line) in lines.enumerated() {
                guard show[k] else { skipped = true; continue }
                if skipped { out += paint.cyan("  ...") + "\n"; skipped = false }
                switch line {
                case let .same(x, _): out += " " + text(x, original: true).replacingOccurrences(of: "\n", with: "\n ") + "\n"
                case let .removed(x): out += paint.red("-" + text(x, original: true).replacingOccurrences(of: "\n", with: "\n-")) + "\n"
                case let .added(y): out += paint.green("+" + text(y, original: false).replacingOccurrences(of: "\n", with: "\n+")) + "\n"
                }
            }
        case .sideBySide(let width):
            let column = max(20, (width - 3) / 2)
            func cell(_ s: String) -> String {
                // Relocation lines go after the instruction, on the same row.
                let lines = s.replacingOccurrences(of: "\t", with: " ").split(separator: "\n")
                let first = lines.enumerated().map { $0.offset == 0 ? String($0.element) : "; " + $0.element.trimmingCharacters(in: .whitespaces) }
                    .joined(separator: " ")
                return first.count > column ? String(first.prefix(column - 1)) + "…" : first + String(repeating: " ", count: column - first.count)
            }
            var k = 0
            while k < lines.count {
                guard show[k] else { skipped = true; k += 1; continue }
                if skipped { out += paint.cyan("  ...") + "\n"; skipped = false }
                if case let .same(x, y) = lines[k] {
                    out += cell(text(x, original: true)) + "   " + cell(text(y, original: false)).trimmingTrailingSpaces() + "\n"
                    k += 1
                    continue
                }
                // A block of changes: pair removed and added lines row by row.
                var left: [Instruction] = [], right: [Instruction] = []
                while k < lines.count {
                    if case let .removed(x) = lines[k] { left.append(x) } else if case let .added(y) = lines[k] { right.append(y) } else { break }
                    k += 1
                }
                for row in 0..<max(left.count, right.count) {
                    let l = row < left.count ? cell(text(left[row], original: true)) : String(repeating: " ", count: column)
                    let r = row < right.count ? cell(text(right[row], original: false)) : ""
                    let mark = row < left.count && row < right.count ? " | " : (row < left.count ? " < " : " > ")
                    out += (row < left.count ? paint.red(l) : l) + paint.cyan(mark) + (row < right.count ? paint.green(r) : r).trimmingTrailingSpaces() + "\n"
                }
            }
        }
        return out
    }

    /// Same-size functions: aligned by position, an instruction pair differing where a difference
    /// lies; otherwise a longest-common-subsequence alignment on the instructions' text.
    private func align(_ change: Change, _ before: [Instruction], _ after: [Instruction]) -> [Line] {
        let baseA = change.original.address, baseB = change.patched.address
        if change.original.size == change.patched.size {
            var lines: [Line] = []
            var ia = 0, ib = 0
            while ia < before.count || ib < after.count {
                guard ia < before.count, ib < after.count else {
                    if ia < before.count { lines.append(.removed(before[ia])); ia += 1 } else { lines.append(.added(after[ib])); ib += 1 }
                    continue
                }
                let start = Int(before[ia].address - baseA)
                if before[ia].size == after[ib].size {
                    let range = start..<start + before[ia].size
                    if change.differences.contains(where: { $0.range.overlaps(range) }) {
                        lines.append(.removed(before[ia])); lines.append(.added(after[ib]))
                    } else {
                        lines.append(.same(before[ia], after[ib]))
                    }
                    ia += 1; ib += 1
                    continue
                }
                var endA = start + before[ia].size, endB = start + after[ib].size
                var removed = [before[ia]], added = [after[ib]]
                ia += 1; ib += 1
                while endA != endB, ia < before.count || ib < after.count {
                    if endA < endB, ia < before.count { removed.append(before[ia]); endA += before[ia].size; ia += 1 }
                    else if ib < after.count { added.append(after[ib]); endB += after[ib].size; ib += 1 }
                    else { break }
                }
                lines += removed.map { .removed($0) } + added.map { .added($0) }
            }
            return lines
        }
        func key(_ insn: Instruction, _ base: UInt64, _ unit: Unit) -> String {
            if let target = insn.target, target >= base, target < base + unit.size {
                return insn.mnemonic + " +" + String(target - base, radix: 16)
            }
            return insn.mnemonic + " " + (insn.target == nil ? insn.operands : "")
        }
        let script = EditScript(before.map { key($0, baseA, change.original) }, after.map { key($0, baseB, change.patched) })
        return script.steps.map { step in
            switch step {
            case let .keep(i, j): return .same(before[i], after[j])
            case let .delete(i): return .removed(before[i])
            case let .insert(j): return .added(after[j])
            }
        }
    }

    /// `<name+0x10>` for addresses inside the function itself, and the names of branch targets
    /// outside it.
    private func symbolizer(_ unit: Unit, _ outside: [UInt64: String]) -> (UInt64) -> String? {
        let name = unit.displayName, base = unit.address, size = unit.size
        return { address in
            guard address >= base, address < base + size else { return outside[address] }
            return address == base ? name : name + "+" + Hex.address(address - base)
        }
    }

    // MARK: JSON

    /// The report as JSON (`suture diff --json`).
    public func jsonReport() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(JSONSummary(self))) ?? Data()
    }

    private struct JSONSummary: Encodable {
        struct DifferenceEntry: Encodable {
            var offset: String
            var size: Int
            var kind: String
            var detail: String
        }
        struct ChangeEntry: Encodable {
            var name: String
            var ordinal: Int?
            var section: String
            var originalSize: UInt64
            var patchedSize: UInt64
            var differences: [DifferenceEntry]
            var hunks: [Hunk]
            var notApplicable: [String]
        }
        struct StringEntry: Encodable {
            var section: String
            var offset: String
            var original: String
            var patched: String
            var references: [String]
            var hunk: Hunk?
            var notApplicable: String?
        }
        var original: String
        var patched: String
        var module: String?
        var architecture: String?
        var target: TargetIdentityJSON?
        var unchangedFunctions: Int
        var functions: [ChangeEntry]
        var objects: [ChangeEntry]
        var strings: [StringEntry]
        var added: [Unit]
        var removed: [Unit]
        var hunks: [Hunk]
        var applicable: Bool
        var notApplicable: [String]

        struct TargetIdentityJSON: Encodable { var kind: String; var release: String?; var buildID: String? }

        init(_ diff: ObjectDiff) {
            func entry(_ c: Change) -> ChangeEntry {
                ChangeEntry(name: c.original.name, ordinal: c.original.ordinal, section: c.original.section,
                            originalSize: c.original.size, patchedSize: c.patched.size,
                            differences: c.differences.map { d in
                                let kind: String
                                switch d.kind {
                                case .bytes: kind = "bytes"
                                case .reference: kind = "reference"
                                case .string: kind = "string"
                                case .layout: kind = "layout"
                                case .size: kind = "size"
                                }
                                return DifferenceEntry(offset: Hex.address(UInt64(d.range.lowerBound)), size: d.range.count, kind: kind,
                                                       detail: ObjectDiff.describe(d.kind))
                            },
                            hunks: c.hunks, notApplicable: c.notApplicable)
            }
            original = diff.originalPath
            patched = diff.patchedPath
            module = diff.module
            architecture = diff.architecture?.rawValue
            target = diff.target.map { TargetIdentityJSON(kind: $0.kind.rawValue, release: $0.release, buildID: $0.buildID) }
            unchangedFunctions = diff.unchangedFunctions
            functions = diff.functions.map(entry)
            objects = diff.objects.map(entry)
            strings = diff.strings.map {
                StringEntry(section: $0.section, offset: Hex.address($0.offset), original: ObjectDiff.quote($0.original),
                            patched: ObjectDiff.quote($0.patched), references: $0.references, hunk: $0.hunk, notApplicable: $0.notApplicable)
            }
            added = diff.added
            removed = diff.removed
            hunks = diff.hunks
            notApplicable = diff.notApplicable
            applicable = notApplicable.isEmpty && !hunks.isEmpty
        }
    }
}

/// ANSI colours, or nothing.
private struct Painter {
    var enabled: Bool
    func wrap(_ code: String, _ text: String) -> String { enabled ? "\u{1b}[\(code)m" + text + "\u{1b}[0m" : text }
    func red(_ text: String) -> String { wrap("31", text) }
    func green(_ text: String) -> String { wrap("32", text) }
    func cyan(_ text: String) -> String { wrap("36", text) }
    func bold(_ text: String) -> String { wrap("1", text) }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var copy = self
        while copy.last == " " { copy.removeLast() }
        return copy
    }
}
