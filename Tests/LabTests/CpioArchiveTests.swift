import Foundation
import Testing
import TestSupport
@testable import Lab

/// The newc writer against GNU cpio, which unpacks and lists what the kernel would.
struct CpioArchiveTests {
    @Test("GNU cpio extracts directories, files, modes and symlinks as written")
    func roundTripThroughCpio() throws {
        var archive = CpioArchive()
        archive.addDirectory("empty/dir")
        archive.addFile("bin/tool", text: "#!/bin/sh\necho hi\n", mode: 0o755)
        archive.addFile("etc/odd-size", contents: [1, 2, 3], mode: 0o600)
        archive.addSymlink("bin/link", target: "tool")
        archive.addCharacterDevice("dev/console", major: 5, minor: 1)
        archive.finish()
        #expect(archive.bytes.count % 4 == 0)

        let folder = try Fixtures.temporaryFolder("suture-cpio")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("a.cpio")
        try Data(archive.bytes).write(to: file)
        let listing = try Fixtures.check("cpio", ["-itv", "--quiet", "-F", file.path])
        let lines = listing.split(separator: "\n").map(String.init)
        #expect(lines.count == 9)   // empty, empty/dir, bin, bin/tool, etc, etc/odd-size, bin/link, dev, dev/console
        #expect(lines.contains { $0.hasPrefix("crw-------") && $0.contains("5,") && $0.hasSuffix("dev/console") })
        #expect(lines.contains { $0.hasPrefix("lrwxrwxrwx") && $0.hasSuffix("bin/link -> tool") })

        // Unpack without the device node (creating it needs more than a test should do).
        let out = folder.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try Fixtures.check("cpio", ["-id", "--quiet", "-F", file.path, "--no-absolute-filenames",
                                    "empty/dir", "bin/tool", "etc/odd-size", "bin/link"], in: out)
        #expect(try String(contentsOf: out.appendingPathComponent("bin/tool"), encoding: .utf8) == "#!/bin/sh\necho hi\n")
        #expect(try Data(contentsOf: out.appendingPathComponent("etc/odd-size")) == Data([1, 2, 3]))
        let attributes = try FileManager.default.attributesOfItem(atPath: out.appendingPathComponent("bin/tool").path)
        #expect((attributes[.posixPermissions] as? Int) == 0o755)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out.appendingPathComponent("bin/link").path) == "tool")
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("empty/dir").path))
    }
}
