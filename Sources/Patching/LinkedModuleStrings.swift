import ELF

/// The linked module (`.ko`) that an object file is part of, as it was shipped and runs: where the
/// object's string literals ended up, and who else refers to them.
///
/// An object's string literal is not yet the running kernel's bytes: when the module is linked the
/// string sections of all its objects are merged, so an equal string of another object (or one it
/// ends with) becomes the same bytes. Writing the new text in place is then safe only if, in the
/// linked module, nothing but the changed fields refers into those bytes. Only the shipped `.ko`
/// can say that; the object cannot, and a module linked here from one rebuilt object could not
/// either.
struct LinkedModuleStrings {
    /// One field of the object that refers to the string (its unit, offset in it, relocation and
    /// the bias from the relocated value to the string).
    struct Use {
        var unit: ObjectDiff.Unit
        var field: Int
        var relocation: Relocation
        var bias: Int64
    }

    enum Verdict {
        /// Nothing else refers into the string's bytes: the units of the `.ko` holding each use's
        /// field (in the order of the uses), whose names and ordinals locate the fields live.
        case unique(units: [ObjectDiff.Unit])
        case refused(String)
    }

    let side: ObjectDiffSide
    var path: String { side.path }
    private var name: String { path.split(separator: "/").last.map(String.init) ?? path }

    init(file: ELFFile) throws(ObjectDiffError) {
        side = try ObjectDiffSide(file: file)
    }

    /// Whether the string `original` (without its NUL), reached from the object through `uses`, may
    /// be written in place in the linked module: each use's field is found in the `.ko` (same unit
    /// by name, kind and size, a relocation of the same type at the same offset), all of them lead
    /// to one place whose bytes are `original` and its NUL, and no other relocation of the `.ko`, in
    /// any section, lands inside those bytes.
    func judge(uses: [Use], original: [UInt8]) -> Verdict {
        guard side.isRelocatable else {
            return .refused("\(path) is not a relocatable module (.ko): its strings' referrers are not known")
        }
        let expected = original + [0]
        var units: [ObjectDiff.Unit] = []
        var own = Set<String>()
        var place: (section: Int, offset: UInt64)?
        for use in uses {
            var matches: [(unit: ObjectDiff.Unit, relocation: Relocation, at: (section: Int, offset: UInt64))] = []
            var found: [String] = []
            for candidate in side.units where candidate.name == use.unit.name && candidate.kind == use.unit.kind
                && candidate.size == use.unit.size {
                let offset = candidate.offset + UInt64(use.field)
                guard let relocation = side.relocations(in: candidate.sectionIndex, range: offset..<offset + 1).first(where: { $0.offset == offset }) else {
                    found.append("\(candidate.displayName): no relocation at +\(Hex.address(UInt64(use.field)))")
                    continue
                }
                guard relocation.type == use.relocation.type else {
                    found.append("\(candidate.displayName)+\(Hex.address(UInt64(use.field))): \(relocation.typeName), not \(use.relocation.typeName)")
                    continue
                }
                guard let at = target(of: relocation, bias: use.bias) else {
                    found.append("\(candidate.displayName)+\(Hex.address(UInt64(use.field))): refers to \(relocation.symbolName), not to a place")
                    continue
                }
                let bytes = self.bytes(in: at.section, at: at.offset, count: expected.count)
                guard bytes == expected else {
                    found.append("\(candidate.displayName)+\(Hex.address(UInt64(use.field))) → \(side.section(at.section).name)+"
                                 + "\(Hex.address(at.offset)): \(bytes.map { Hex.bytes($0) } ?? "outside the section"), expected \(Hex.bytes(expected))")
                    continue
                }
                matches.append((candidate, relocation, at))
            }
            let what = "\(use.unit.kind.rawValue) \(use.unit.name) (\(use.unit.size) bytes)"
            guard matches.count == 1, let match = matches.first else {
                if matches.count > 1 {
                    return .refused("\(name) has \(matches.count) \(what)s whose field +\(Hex.address(UInt64(use.field))) refers to "
                                    + "this string: which one is this object's is unknown")
                }
                return .refused("\(name) has no \(what) whose field +\(Hex.address(UInt64(use.field))) refers to this string"
                                + (found.isEmpty ? "" : " (" + found.prefix(4).joined(separator: "; ") + ")")
                                + ": the shipped module is not built from this source")
            }
            if let place, place != match.at {
                return .refused("in \(name) the references lead to two copies (\(side.section(place.section).name)+\(Hex.address(place.offset)) "
                                + "and \(side.section(match.at.section).name)+\(Hex.address(match.at.offset))): one hunk cannot change both")
            }
            place = match.at
            units.append(match.unit)
            own.insert("\(match.unit.sectionIndex):\(match.relocation.offset)")
        }
        guard let place else { return .refused("no field refers to it") }

        let others: [String]
        do {
            others = try referrers(into: place.section, range: place.offset..<place.offset + UInt64(expected.count), except: own)
        } catch {
            return .refused("\(name): cannot read its relocations: \(error)")
        }
        guard others.isEmpty else {
            return .refused("in \(name) (\(side.section(place.section).name)+\(Hex.address(place.offset))) other code or data refers "
                            + "to these bytes too (\(others.prefix(6).joined(separator: ", "))" + (others.count > 6 ? ", …" : "")
                            + "): the linker merged or suffix-shared the string, and changing it would change that too")
        }
        return .unique(units: units)
    }

    /// The section and offset a relocation of the `.ko` leads to with `bias` (the same
    /// computation as the object's), when it names a place rather than an external symbol.
    private func target(of relocation: Relocation, bias: Int64) -> (section: Int, offset: UInt64)? {
        guard relocation.symbolIndex != 0, ObjectDiffComparator.isPlaceBased(relocation, side: side) else { return nil }
        let index = Int(relocation.symbolSectionIndex)
        guard index > 0, index < side.file.sections.count else { return nil }
        let offset = Int64(bitPattern: relocation.symbolValue) &+ relocation.addend &+ bias
        guard offset >= 0 else { return nil }
        return (index, UInt64(offset))
    }

    private func bytes(in section: Int, at offset: UInt64, count: Int) -> [UInt8]? {
        guard let data = try? side.file.data(of: side.section(section)), offset + UInt64(count) <= UInt64(data.count) else { return nil }
        return Array(data[Int(offset)..<Int(offset) + count])
    }

    /// Every relocation of the `.ko` (all relocation tables: code, data, tables such as
    /// `__dyndbg` or `__bug_table` that hold no symbols, and the rest) that may land in `range` of
    /// `section`, except the fields in `own` ("section:offset"), named by the function or object
    /// holding them. A PC-relative field in code points past its instruction, 4 to 8 bytes after
    /// S + A on x86-64 (the field, then at most an immediate); every place in that window counts,
    /// so no reference is missed for not knowing its instruction's length.
    private func referrers(into section: Int, range: Range<UInt64>, except own: Set<String>) throws(ELFError) -> [String] {
        var result: [String] = []
        let machine = side.file.header.machine
        for table in side.file.sections where table.isRelocationTable {
            let applied = Int(table.info)
            guard applied > 0, applied < side.file.sections.count else { continue }
            let code = side.section(applied).isExecutable
            for relocation in try side.file.relocations(in: table) {
                guard relocation.symbolIndex != 0, Int(relocation.symbolSectionIndex) == section else { continue }
                if own.contains("\(applied):\(relocation.offset)") { continue }
                let base = Int64(bitPattern: relocation.symbolValue) &+ relocation.addend
                let window = code && ObjectDiffComparator.isPCRelative(relocation, machine: machine) ? (base + 4)...(base + 8) : base...base
                guard window.upperBound >= Int64(range.lowerBound), window.lowerBound < Int64(range.upperBound) else { continue }
                let holder = side.unit(containing: relocation.offset, in: applied).map { i in
                    "\(side.units[i].displayName)+\(Hex.address(relocation.offset - side.units[i].offset))"
                } ?? "\(side.section(applied).name)+\(Hex.address(relocation.offset))"
                result.append(holder)
            }
        }
        return result
    }
}
