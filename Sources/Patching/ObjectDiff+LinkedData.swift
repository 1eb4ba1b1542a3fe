import ELF

/// Read-only data of a linked program or shared library (a string literal in `.rodata`) changed in
/// place: the same bytes at the same place in both builds.
///
/// Unlike an object file, a linked image has its final layout: if the patched build has other
/// bytes at that place, every user of them in the patched build sees them, so writing exactly the
/// patched build's bytes there is faithful, whoever else reads them. The image moves as one (its
/// load bias), so the place is named from a symbol of the same image: the nearest function or
/// object at or below it (`_IO_stdin_used+0x8`), which the live process' symbols place.
extension ObjectDiffSide {
    func linkedDataHunk(section: Section, offset: UInt64, original: [UInt8], patched: [UInt8], module: String?) -> Hunk? {
        guard !isRelocatable, original.count == patched.count, !original.isEmpty else { return nil }
        let address = section.address + offset
        // Same section first (an object before the string), else any unit below it.
        let below = units.filter { $0.address <= address }
        guard let anchor = below.filter({ $0.sectionIndex == section.index }).max(by: { $0.address < $1.address })
                ?? below.max(by: { $0.address < $1.address }) else { return nil }
        return Hunk(symbol: anchor.name, module: module, ordinal: anchor.ordinal, offset: address - anchor.address,
                    expected: original, replacement: patched)
    }
}
