import ELF

/// Who the running guest kernel is: enough to match it with the kernel files on the host.
public struct LabInfo: Sendable, Hashable {
    /// `uname -r`.
    public var release: String
    /// The GNU build-id note from /sys/kernel/notes; equals vmlinux's `.note.gnu.build-id`.
    public var buildID: [UInt8]
    public var bootID: String
    /// /proc/cmdline.
    public var commandLine: String

    public var buildIDHex: String { Hex.bytes(buildID, separator: "") }
}

/// Parses the ELF note stream the kernel exports in /sys/kernel/notes.
enum KernelNotes {
    /// Each note: namesz, descsz, type (4 bytes each, little-endian), the name and the descriptor,
    /// both padded to 4 bytes. Returns the descriptor of the GNU note of type 3 (NT_GNU_BUILD_ID).
    static func buildID(in notes: [UInt8]) -> [UInt8]? {
        func word(_ at: Int) -> Int {
            Int(notes[at]) | Int(notes[at + 1]) << 8 | Int(notes[at + 2]) << 16 | Int(notes[at + 3]) << 24
        }
        func aligned(_ value: Int) -> Int { (value + 3) & ~3 }
        var offset = 0
        while offset + 12 <= notes.count {
            let nameSize = word(offset), descriptorSize = word(offset + 4), type = word(offset + 8)
            let nameStart = offset + 12
            let descriptorStart = nameStart + aligned(nameSize)
            let next = descriptorStart + aligned(descriptorSize)
            guard nameSize >= 0, descriptorSize >= 0, descriptorStart + descriptorSize <= notes.count else { return nil }
            let name = notes[nameStart..<(nameStart + nameSize)].prefix { $0 != 0 }
            if type == 3, name.elementsEqual("GNU".utf8) {
                return Array(notes[descriptorStart..<(descriptorStart + descriptorSize)])
            }
            offset = next
        }
        return nil
    }

    /// Bytes from `od -An -v -tx1` output ("  7f 45 4c 46 ...").
    static func parseOdHex(_ text: Substring) -> [UInt8] {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).compactMap { UInt8($0, radix: 16) }
    }
}
