/// One ELF note (from a SHT_NOTE section or a PT_NOTE segment).
public struct Note: Sendable, Hashable {
    /// The owner (`GNU`, `Linux`, `Xen`), without its terminating NUL.
    public var name: String
    public var type: UInt32
    public var descriptor: [UInt8]

    public init(name: String, type: UInt32, descriptor: [UInt8]) {
        self.name = name
        self.type = type
        self.descriptor = descriptor
    }

    /// An NT_GNU_BUILD_ID note from the "GNU" owner.
    public var isGNUBuildID: Bool { name == "GNU" && type == ELFConstants.NT_GNU_BUILD_ID }
}

extension Note {
    /// Parses a note stream held in memory, such as the kernel's `/sys/kernel/notes` or the bytes
    /// between `__start_notes` and `__stop_notes` read from a live kernel. `source` names it in errors.
    public static func parse(_ bytes: [UInt8], source: String, alignment: Int = 4) throws(ELFError) -> [Note] {
        let storage = bytes.withUnsafeBytes { ByteStorage(copying: $0) }
        return try parse(ByteReader(storage: storage, file: source), start: 0, size: bytes.count,
                         alignment: alignment, what: source)
    }

    /// The GNU build-id among `notes`, in lowercase hex.
    public static func buildID(in notes: [Note]) -> String? {
        notes.first(where: \.isGNUBuildID).map { Hex.bytes($0.descriptor, separator: "") }
    }

    /// Parses the notes in `size` bytes at file offset `start` (already bounds-checked).
    /// Entries are padded to `alignment` (4, or 8 for 8-aligned note sections such as
    /// `.note.gnu.property`); `what` names the container in errors (`.note.gnu.build-id`).
    static func parse(_ reader: ByteReader, start: Int, size: Int, alignment: Int, what: String) throws(ELFError) -> [Note] {
        var notes: [Note] = []
        var position = 0
        // Every round consumes at least the 12-byte header, so the loop ends.
        while position < size {
            let structure = "note \(notes.count) in \(what)"
            let at = start + position
            let remaining = size - position
            guard remaining >= Raw.NoteHeader.size else {
                throw .truncated(file: reader.file, structure: structure, offset: UInt64(at),
                                 needed: UInt64(Raw.NoteHeader.size), available: UInt64(remaining))
            }
            let header = Raw.NoteHeader(reader, at: at)
            // Sizes are 32-bit, offsets stay far below Int.max: no overflow in these sums.
            let nameStart = position + Raw.NoteHeader.size
            let nameSize = Int(header.nameSize)
            guard nameSize <= size - nameStart else {
                throw .truncated(file: reader.file, structure: structure + " name", offset: UInt64(start + nameStart),
                                 needed: UInt64(nameSize), available: UInt64(size - nameStart))
            }
            let descriptorStart = align(nameStart + nameSize, alignment)
            let descriptorSize = Int(header.descriptorSize)
            guard descriptorStart <= size, descriptorSize <= size - descriptorStart else {
                throw .truncated(file: reader.file, structure: structure + " descriptor",
                                 offset: UInt64(start + min(descriptorStart, size)), needed: UInt64(descriptorSize),
                                 available: UInt64(max(size - descriptorStart, 0)))
            }
            let nameLength = reader.stringLength(at: start + nameStart, limit: nameSize) ?? nameSize
            let name = reader.string(at: start + nameStart, length: nameLength)
            let descriptor = Array(UnsafeRawBufferPointer(start: reader.base + start + descriptorStart, count: descriptorSize))
            notes.append(Note(name: name, type: header.type, descriptor: descriptor))
            position = align(descriptorStart + descriptorSize, alignment)
        }
        return notes
    }

    @inline(__always)
    private static func align(_ value: Int, _ alignment: Int) -> Int {
        (value + alignment - 1) & ~(alignment - 1)
    }
}
