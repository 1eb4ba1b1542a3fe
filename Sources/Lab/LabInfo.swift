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

/// The kernel's notes as the guest prints them over the console.
enum KernelNotes {
    /// Bytes from `od -An -v -tx1` output ("  7f 45 4c 46 ...").
    static func parseOdHex(_ text: Substring) -> [UInt8] {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).compactMap { UInt8($0, radix: 16) }
    }
}
