import ELF
import Foundation
import Testing
import TestSupport
@testable import Patching

/// `suture build` against the real Debian 6.1 source (linux-source-6.1 6.1.192-2, fetched and
/// unpacked into the cache the first time: a few minutes) and the real Debian image package.
/// Oracles: gcc-12 itself, GNU make and patch, sha256sum, modinfo and the shipped nfs.ko.
/// Serialized: the tests share one source tree, and a build holds its lock.
@Suite("Kernel build (Debian 6.1 source)", .serialized)
struct KernelBuildTests {
    static let release = Fixtures.DebianKernel.release

    /// The pinned Debian source tree, unpacked into the cache if needed.
    static func debian() throws -> (DebianKernelSource, KernelSourceTree) {
        _ = try Fixtures.debianKernel()
        let debian = try DebianKernelSource(release: release, cache: Fixtures.cacheFolder.path)
        let tree = try debian.ensure(progress: { _ in })
        return (debian, tree)
    }

    static func sha256(_ path: String) throws -> String {
        String(try Fixtures.check("sha256sum", [path]).prefix(64))
    }

    /// Checksums of files in the tree, read while holding the tree's build lock: another build
    /// (the lab test's, run concurrently) may have the tree patched between its own lock and unlock.
    static func treeChecksums(_ tree: KernelSourceTree, _ paths: [String]) throws -> [String] {
        let lock = try FileLock(tree.lockFile, throwing: KernelBuildError.self)
        defer { withExtendedLifetime(lock) {} }
        return try paths.map(sha256)
    }

    /// The first line of `gcc-12 --version`, straight from the compiler.
    static func gcc12VersionLine() throws -> String {
        String(try Fixtures.check("gcc-12", ["--version"]).split(separator: "\n")[0])
    }

    static func config(_ base: KernelConfig, compilerText: String?) -> KernelConfig {
        var lines = String(decoding: base.contents, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("CONFIG_CC_VERSION_TEXT=") }.map(String.init)
        if let compilerText { lines.insert("CONFIG_CC_VERSION_TEXT=\"\(compilerText)\"", at: 1) }
        return KernelConfig(contents: Array(lines.joined(separator: "\n").utf8), path: "test.config")
    }

    // MARK: Compiler

    @Test("the compiler check accepts the image's config with gcc-12 and refuses other compilers")
    func compilerCheck() throws {
        let kernel = try Fixtures.debianKernel()
        let shipped = try KernelConfig(path: kernel.config.path)
        let check = try CompilerCheck.verify(config: shipped)
        #expect(check.compiler == "gcc-12")
        #expect(check.versionText == (try Self.gcc12VersionLine()))

        // Another gcc: named by the config, not installed (or another version if it is).
        let other = Self.config(shipped, compilerText: "gcc-13 (Debian 13.2.0-25) 13.2.0")
        do {
            _ = try CompilerCheck.verify(config: other)
            Issue.record("gcc-13's config accepted")
        } catch let error {
            guard case let .compilerMismatch(_, text, compiler, _) = error else { throw error }
            #expect(text == "gcc-13 (Debian 13.2.0-25) 13.2.0")
            #expect(compiler == "gcc-13")
        }

        // Same program, another Debian revision: the first --version line differs.
        let revision = Self.config(shipped, compilerText: "gcc-12 (Debian 12.2.0-14+deb12u2) 12.2.0")
        do {
            _ = try CompilerCheck.verify(config: revision)
            Issue.record("another gcc-12 revision accepted")
        } catch let error {
            guard case let .compilerMismatch(_, _, compiler, found) = error else { throw error }
            #expect(compiler == "gcc-12")
            #expect(found == (try Self.gcc12VersionLine()))
            #expect("\(error)".contains("CONFIG_CC_VERSION_TEXT"))
        }

        // clang's text names clang, whatever the vendor prefix.
        #expect(CompilerCheck.compilerName(configText: "Debian clang version 14.0.6") == "clang")

        #expect(throws: KernelBuildError.self) { try CompilerCheck.verify(config: Self.config(shipped, compilerText: nil)) }
    }

    @Test("suture build refuses a config naming another compiler and leaves the tree as it was")
    func compilerRefusalCommand() throws {
        let (_, tree) = try Self.debian()
        let kernel = try Fixtures.debianKernel()
        let folder = try Fixtures.temporaryFolder("suture-build")
        defer { try? FileManager.default.removeItem(at: folder) }
        let bad = Self.config(try KernelConfig(path: kernel.config.path), compilerText: "gcc-12 (Debian 12.2.0-14+deb12u2) 12.2.0")
        let configPath = folder.appendingPathComponent("config").path
        try Data(bad.contents).write(to: URL(fileURLWithPath: configPath))

        let watched = [tree.root + "/fs/nfs/file.c", tree.dotConfig, tree.prepareStamp]
            .filter { FileManager.default.fileExists(atPath: $0) }
        let before = try Self.treeChecksums(tree, watched)
        let patch = Fixtures.sourcesFolder.appendingPathComponent("nfs_flock.patch").path
        let result = try Fixtures.suture(["build", "--kernel-source", tree.root, "--config", configPath, patch,
                                          "-o", folder.appendingPathComponent("b.json").path])
        #expect(result.status == 3, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stderr.contains("CONFIG_CC_VERSION_TEXT"))
        #expect(result.stderr.contains("gcc-12 (Debian 12.2.0-14+deb12u2) 12.2.0"))
        #expect(result.stderr.contains(try Self.gcc12VersionLine()))
        #expect(try Self.treeChecksums(tree, watched) == before)
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("b.json").path))
    }

    // MARK: Patches

    @Test("a patch that does not apply is refused with patch's message; the tree is unmodified")
    func patchDoesNotApply() throws {
        let (_, tree) = try Self.debian()
        let folder = try Fixtures.temporaryFolder("suture-build")
        defer { try? FileManager.default.removeItem(at: folder) }
        // Hunk 1 is the article's change and applies; hunk 2's context is not in the file.
        let text = try String(contentsOf: Fixtures.sourcesFolder.appendingPathComponent("nfs_flock.patch"), encoding: .utf8)
            + """
            @@ -900,3 +900,3 @@
             	this line is not in fs/nfs/file.c
            -	neither is this one
            +	nor this one

            """
        let patch = folder.appendingPathComponent("two-hunks.patch")
        try text.write(to: patch, atomically: true, encoding: .utf8)
        let file = tree.root + "/fs/nfs/file.c"
        let before = try Self.treeChecksums(tree, [file])

        let result = try Fixtures.suture(["build", "--debian-kernel", Self.release, patch.path,
                                          "-o", folder.appendingPathComponent("b.json").path])
        #expect(result.status == 3, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stderr.contains("does not apply"))
        #expect(result.stderr.contains("Hunk #2 FAILED"))      // patch's own words
        #expect(try Self.treeChecksums(tree, [file]) == before)
        for leftover in [file + ".orig", file + ".rej", tree.journal] {
            #expect(!FileManager.default.fileExists(atPath: leftover), "\(leftover) left behind")
        }
    }

    @Test("a patch that breaks the build fails with gcc's error; the tree is restored")
    func patchBreaksBuild() throws {
        let (_, tree) = try Self.debian()
        let folder = try Fixtures.temporaryFolder("suture-build")
        defer { try? FileManager.default.removeItem(at: folder) }
        let text = """
            --- a/fs/nfs/file.c
            +++ b/fs/nfs/file.c
            @@ -841,7 +841,7 @@
             \tdprintk("NFS: flock(%pD2, t=%x, fl=%x)\\n",
             \t\t\tfilp, fl->fl_type, fl->fl_flags);
             
            -\tif (!(fl->fl_flags & FL_FLOCK))
            +\tif (!(fl->fl_flags & FL_FLOCK_SUTURE_UNDECLARED))
             \t\treturn -ENOLCK;
             
             \tif (NFS_SERVER(inode)->flags & NFS_MOUNT_LOCAL_FLOCK)

            """
        let patch = folder.appendingPathComponent("broken.patch")
        try text.write(to: patch, atomically: true, encoding: .utf8)
        let file = tree.root + "/fs/nfs/file.c"
        let before = try Self.treeChecksums(tree, [file])

        let result = try Fixtures.suture(["build", "--debian-kernel", Self.release, patch.path,
                                          "-o", folder.appendingPathComponent("b.json").path])
        #expect(result.status == 1, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("build before"))             // the unpatched object was built
        #expect(result.stderr.contains("FL_FLOCK_SUTURE_UNDECLARED"))  // gcc's error, from make's output
        #expect(result.stderr.contains("build-after.log"))
        #expect(try Self.treeChecksums(tree, [file]) == before)
        #expect(!FileManager.default.fileExists(atPath: tree.journal))
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("b.json").path))
    }

    @Test("SIGINT while the patched object builds stops make, restores the tree, exits 130")
    func interruptRestores() throws {
        let (_, tree) = try Self.debian()
        let folder = try Fixtures.temporaryFolder("suture-build")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = tree.root + "/fs/nfs/file.c"
        let before = try Self.treeChecksums(tree, [file])

        let process = Process()
        process.executableURL = try Fixtures.sutureBinary()
        process.arguments = ["build", "--debian-kernel", Self.release,
                             Fixtures.sourcesFolder.appendingPathComponent("nfs_flock.patch").path,
                             "-o", folder.appendingPathComponent("b.json").path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) }; process.waitUntilExit() }

        // Wait until the patched build runs: the tree is patched then, and make is compiling.
        var text = ""
        let deadline = Date().addingTimeInterval(600)
        while !text.contains("build after      ..."), process.isRunning, Date() < deadline {
            text += String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
        }
        try #require(text.contains("build after      ..."), "never reached the patched build:\n\(text)")
        #expect(FileManager.default.fileExists(atPath: tree.journal))   // patched right now
        usleep(500_000)
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        text += String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)

        #expect(process.terminationStatus == 130, "\(text)")
        #expect(text.contains("interrupted during `make"))
        #expect(try Self.treeChecksums(tree, [file]) == before)
        #expect(!FileManager.default.fileExists(atPath: tree.journal))
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("b.json").path))
    }

    @Test("files that are not a .c built into an object are refused by name")
    func unsupportedFiles() throws {
        let (_, tree) = try Self.debian()
        let build = KernelBuild(tree: tree, configFile: tree.dotConfig, cache: "/nonexistent")
        func files(_ header: String) throws(KernelBuildError) -> SourcePatch {
            try SourcePatch(text: Array("\(header)\n@@ -1,1 +1,1 @@\n-a\n+b\n".utf8), path: "x.patch")
        }
        let cases: [(String, String)] = [
            ("--- a/include/linux/fs.h\n+++ b/include/linux/fs.h", "a header"),
            ("--- a/fs/nfs/Makefile\n+++ b/fs/nfs/Makefile", "not a C source"),
            ("--- /dev/null\n+++ b/fs/nfs/new.c", "creates this file"),
            ("--- a/fs/nfs/file.c\n+++ /dev/null", "deletes this file"),
            ("--- a/fs/nfs/nosuch.c\n+++ b/fs/nfs/nosuch.c", "no such file"),
            ("--- a/../etc/x.c\n+++ b/../etc/x.c", "leaves the tree"),
        ]
        for (header, reason) in cases {
            do {
                _ = try build.checkFiles(of: try files(header))
                Issue.record("accepted: \(header)")
            } catch let error {
                guard case .unsupportedFile = error else { throw error }
                #expect("\(error)".contains(reason), "\(error)")
            }
        }
        #expect(try build.checkFiles(of: try files("--- a/fs/nfs/file.c\t2024-01-01\n+++ b/fs/nfs/file.c")) == ["fs/nfs/file.c"])
    }

    @Test("in-place patching restores the originals after success, a failed patch, and a crash (journal)")
    func journal() throws {
        let folder = try Fixtures.temporaryFolder("suture-journal")
        defer { try? FileManager.default.removeItem(at: folder) }
        let tree = folder.appendingPathComponent("tree").path
        try FileManager.default.createDirectory(atPath: tree + "/dir", withIntermediateDirectories: true)
        let original = (1...20).map { "line \($0)" }.joined(separator: "\n") + "\n"
        try original.write(toFile: tree + "/dir/a.c", atomically: true, encoding: .utf8)
        let good = "--- a/dir/a.c\n+++ b/dir/a.c\n@@ -2,3 +2,3 @@\n line 2\n-line 3\n+LINE 3\n line 4\n"
        let partial = good + "@@ -15,3 +15,3 @@\n line 15\n-no such line\n+x\n line 17\n"
        let goodPatch = try SourcePatch(text: Array(good.utf8), path: folder.appendingPathComponent("good.patch").path)
        try good.write(toFile: goodPatch.path, atomically: true, encoding: .utf8)
        let partialPatch = try SourcePatch(text: Array(partial.utf8), path: folder.appendingPathComponent("partial.patch").path)
        try partial.write(toFile: partialPatch.path, atomically: true, encoding: .utf8)
        let journal = tree + "/.suture/pending-patch"
        let originalHash = try Self.sha256(tree + "/dir/a.c")

        // Oracle: what patch itself makes of a copy.
        let copy = folder.appendingPathComponent("copy").path
        try FileManager.default.copyItem(atPath: tree, toPath: copy)
        try Fixtures.check("patch", ["-p1", "-d", copy, "-i", goodPatch.path])
        let patchedHash = try Self.sha256(copy + "/dir/a.c")
        #expect(patchedHash != originalHash)

        let applied = try SourceTreeJournal.apply(goodPatch, tree: tree, journal: journal)
        #expect(try Self.sha256(tree + "/dir/a.c") == patchedHash)
        #expect(FileManager.default.fileExists(atPath: journal + "/manifest"))
        try applied.restore()
        #expect(try Self.sha256(tree + "/dir/a.c") == originalHash)
        #expect(!FileManager.default.fileExists(atPath: journal))

        // patch applies hunk 1 and fails hunk 2, leaving the file half patched (oracle on a copy);
        // the journal puts it back.
        let halfCopy = folder.appendingPathComponent("half").path
        try FileManager.default.copyItem(atPath: tree, toPath: halfCopy)
        let half = try Fixtures.run("patch", ["-p1", "--forward", "--batch", "--fuzz=0", "-d", halfCopy, "-i", partialPatch.path])
        #expect(half.status != 0)
        #expect(try Self.sha256(halfCopy + "/dir/a.c") == patchedHash)
        do {
            _ = try SourceTreeJournal.apply(partialPatch, tree: tree, journal: journal)
            Issue.record("a failing patch was applied")
        } catch let error {
            guard case let .patchDoesNotApply(_, _, output) = error else { throw error }
            #expect(output.contains("Hunk #2 FAILED"))
        }
        #expect(try Self.sha256(tree + "/dir/a.c") == originalHash)
        #expect(!FileManager.default.fileExists(atPath: journal))

        // A build killed while the tree is patched: nothing restores in-process; the next run does.
        _ = try SourceTreeJournal.apply(goodPatch, tree: tree, journal: journal)
        #expect(try Self.sha256(tree + "/dir/a.c") == patchedHash)
        #expect(try SourceTreeJournal.recover(tree: tree, journal: journal) == ["dir/a.c"])
        #expect(try Self.sha256(tree + "/dir/a.c") == originalHash)
        #expect(try SourceTreeJournal.recover(tree: tree, journal: journal) == [])
    }

    @Test("unified diff headers and hunk sizes are read as patch reads them")
    func sourcePatchParsing() throws {
        let patch = try SourcePatch(path: Fixtures.sourcesFolder.appendingPathComponent("nfs_flock.patch").path)
        #expect(patch.files.map(\.path) == ["fs/nfs/file.c"])
        #expect(patch.files.map(\.hunks) == [1])
        // A removed line that looks like a header stays inside its hunk.
        let tricky = "diff --git a/x.c b/x.c\n--- a/x.c\n+++ b/x.c\n@@ -1,2 +1,2 @@\n--- a/y.c\n-+++ b/y.c\n+z\n+w\n--- a/z.c\n+++ b/z.c\n@@ -3 +3 @@\n-a\n+b\n"
        let parsed = try SourcePatch(text: Array(tricky.utf8), path: "t.patch")
        #expect(parsed.files.map(\.path) == ["x.c", "z.c"])
        #expect(throws: KernelBuildError.self) { try SourcePatch(text: Array("just text\n".utf8), path: "t.patch") }
        #expect(throws: KernelBuildError.self) {
            try SourcePatch(text: Array("--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n a\n".utf8), path: "t.patch")
        }
    }

    // MARK: Objects and modules

    /// GNU make's own reading of `makefile` with the same config and predefined variables: the
    /// values of `names`.
    static func makeVariables(_ names: [String], makefile: String, directory: String, config: String, tree: String) throws -> [String: [String]] {
        let folder = try Fixtures.temporaryFolder("suture-make")
        defer { try? FileManager.default.removeItem(at: folder) }
        var text = "include \(config)\nsrctree := .\nobjtree := .\nsrc := \(directory)\nobj := \(directory)\n"
            + "ARCH := x86\nSRCARCH := x86\nSUBARCH := x86\nBITS := 64\ninclude \(makefile)\n"
        for name in names { text += "$(info \(name)=$(\(name)))\n" }
        text += ".DEFAULT_GOAL := suture-print\nsuture-print: ; @:\n"
        let probe = folder.appendingPathComponent("probe.mk")
        try text.write(to: probe, atomically: true, encoding: .utf8)
        let output = try Fixtures.run("make", ["-s", "--no-print-directory", "-f", probe.path], in: URL(fileURLWithPath: tree))
        guard output.status == 0 else { throw Fixtures.Failure("make could not read \(makefile): \(output.stderr)") }
        var values: [String: [String]] = [:]
        for line in output.stdout.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = line[line.index(after: equals)...].split(whereSeparator: \.isWhitespace).map(String.init)
        }
        return values
    }

    @Test("the object lists of 560 kbuild Makefiles evaluate as GNU make evaluates them")
    func makefileEvaluation() throws {
        let (debian, tree) = try Self.debian()
        let config = try KernelConfig(path: debian.config)
        let listed = try Fixtures.check("sh", ["-c", "cd '\(tree.root)' && find fs net drivers/net drivers/hid kernel mm lib "
                                                     + "arch/x86 sound/core -name Makefile -o -name Kbuild | sort"])
        var compared = 0, unreadable: [String] = []
        for path in ["Kbuild"] + listed.split(separator: "\n").map(String.init) {
            let directory = path == "Kbuild" ? "" : (path as NSString).deletingLastPathComponent
            // Only the file kbuild reads for the directory (Kbuild wins over Makefile).
            guard KbuildMakefile.file(for: directory, in: tree.root) == tree.root + "/" + path else { continue }
            let makefile = try KbuildMakefile(path: tree.root + "/" + path, config: config, predefined: [
                "ARCH": "x86", "SRCARCH": "x86", "SUBARCH": "x86", "BITS": "64", "srctree": ".", "objtree": ".",
                "src": directory, "obj": directory,
            ], root: tree.root)
            let names = makefile.variables.keys.filter { name in
                ["obj-y", "obj-m", "lib-y"].contains(name) || KernelSourceTree.compositeStem(name) != nil
            }.sorted()
            guard !names.isEmpty else { continue }
            guard let reference = try? Self.makeVariables(names, makefile: tree.root + "/" + path, directory: directory,
                                                          config: debian.config, tree: tree.root) else {
                unreadable.append(path)   // make itself stops on it outside kbuild ($(error ...))
                continue
            }
            compared += 1
            for name in names {
                let ours = makefile.words(name), theirs = reference[name] ?? []
                // Object lists: words naming objects or directories (flag variables are not read).
                guard (ours + theirs).allSatisfy({ $0.hasSuffix(".o") || $0.hasSuffix("/") }) else { continue }
                #expect(ours == theirs, "\(path): \(name)")
            }
        }
        #expect(compared > 500)
        #expect(unreadable == ["lib/vdso/Makefile"])
    }

    /// The module a shipped `.ko` declares: `name=` in its `.modinfo` section, read by readelf.
    static func modinfoName(_ relative: String) throws -> String {
        let kernel = try Fixtures.debianKernel()
        let dump = try Fixtures.check("readelf", ["-p", ".modinfo", kernel.module(relative).path])
        let line = try #require(dump.split(separator: "\n").first { $0.contains("]  name=") })
        return String(line[line.range(of: "name=")!.upperBound...]).trimmingCharacters(in: .whitespaces)
    }

    @Test("each .c maps to its object and module as the shipped modules say")
    func objectsAndModules() throws {
        let (debian, tree) = try Self.debian()
        let config = try KernelConfig(path: debian.config)
        let modular: [(String, String)] = [
            ("fs/nfs/file.c", "fs/nfs/nfs.ko"),
            ("fs/nfs/nfs4proc.c", "fs/nfs/nfsv4.ko"),
            ("drivers/hid/hid-apple.c", "drivers/hid/hid-apple.ko"),
            ("drivers/hid/hid-core.c", "drivers/hid/hid.ko"),
            ("net/sunrpc/clnt.c", "net/sunrpc/sunrpc.ko"),
        ]
        for (source, ko) in modular {
            let object = try tree.object(for: source, config: config)
            #expect(object.object == String(source.dropLast(2)) + ".o")
            #expect(object.module == (try Self.modinfoName(ko)), "\(source)")
        }

        // Built in: no module of that name is shipped or listed.
        let builtin = try tree.object(for: "kernel/fork.c", config: config)
        #expect(builtin.module == nil)
        let order = try String(contentsOf: try Fixtures.debianKernel().root
            .appendingPathComponent("lib/modules/\(Self.release)/modules.order"), encoding: .utf8)
        #expect(!order.contains("kernel/kernel/fork.ko"))

        // Not built: CONFIG_NTFS3_FS is off (and no ntfs3.ko ships); rt.c is #included by build_policy.c.
        #expect(!order.contains("ntfs3.ko"))
        for (source, reason) in [("fs/ntfs3/inode.c", "CONFIG_NTFS3_FS is not set"),
                                 ("kernel/sched/rt.c", "no object list names rt.o"),
                                 ("fs/nfs/nfsroot.c", "CONFIG_ROOT_NFS is not set")] {
            do {
                let object = try tree.object(for: source, config: config)
                Issue.record("\(source) maps to \(object)")
            } catch let error {
                guard case .objectNotBuilt = error else { throw error }
                #expect("\(error)".contains(reason), "\(error)")
            }
        }
    }

    // MARK: The article end to end

    /// Function `name`'s bytes in a relocatable object and the mask of bytes the loader or kernel
    /// rewrites (RuntimeSites), as section-relative ranges.
    static func function(_ name: String, in path: String) throws -> (bytes: [UInt8], mask: [UInt8]) {
        let file = try ELFFile(path: path)
        let symbol = try #require(try file.symbols().first { $0.name == name && $0.type == .function && $0.isDefined })
        let section = file.sections[Int(symbol.sectionIndex)]
        let data = try file.data(of: section)
        let range = symbol.value..<symbol.value + symbol.size
        let sites = try RuntimeSites(object: file)
        return (Array(data[Int(range.lowerBound)..<Int(range.upperBound)]), sites.mask(section: section, range: range))
    }

    @Test("the article's patch: nfs_flock+0x2f 74 -> 75 in module nfs, from a rebuild equal to Debian's")
    func articleEndToEnd() throws {
        let kernel = try Fixtures.debianKernel()
        let folder = try Fixtures.temporaryFolder("suture-build")
        defer { try? FileManager.default.removeItem(at: folder) }
        let bundlePath = folder.appendingPathComponent("nfs_flock.bundle.json").path
        let patch = Fixtures.sourcesFolder.appendingPathComponent("nfs_flock.patch").path
        let result = try Fixtures.suture(["build", "--debian-kernel", Self.release, patch, "-o", bundlePath])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        for phase in ["download", "unpack", "identity", "olddefconfig", "modules_prepare", "build before", "build after", "diff"] {
            #expect(result.stdout.contains("  \(phase) "), "no \(phase) line in:\n\(result.stdout)")
        }
        #expect(result.stdout.contains("total "))

        func path(_ label: String) throws -> String {
            let line = try #require(result.stdout.split(separator: "\n").first { $0.hasPrefix("  \(label) ") })
            return line.dropFirst(label.count + 2).trimmingCharacters(in: .whitespaces)
        }
        let before = try path("before"), after = try path("after")
        #expect(before.hasSuffix("/before/fs/nfs/file.o"))

        // The bundle: exactly one hunk, whole instructions (je rel8 is 74 39), in module nfs, bound
        // to the Debian image's release and build-id (readelf's reading of the vmlinux notes).
        let bundle = try PatchBundle.load(path: bundlePath)
        #expect(bundle.hunks == [Hunk(symbol: "nfs_flock", module: "nfs", offset: 0x2f,
                                      expected: [0x74, 0x39], replacement: [0x75, 0x39])])
        #expect(bundle.target?.kind == .kernel)
        #expect(bundle.target?.release == Self.release)
        let notes = try Fixtures.check("readelf", ["-n", try Fixtures.debianVmlinux().path])
        let buildID = try #require(notes.split(separator: "\n").first { $0.contains("Build ID:") })
            .split(separator: ":").last!.trimmingCharacters(in: .whitespaces)
        #expect(bundle.target?.buildID == buildID)
        #expect(bundle.architecture == "x86_64")
        #expect(bundle.functions?.map(\.symbol) == ["nfs_flock"])

        // The unpatched rebuild is Debian's code: nfs_flock equals the shipped nfs.ko's outside the
        // bytes relocations and kernel tables rewrite (in either file).
        let rebuilt = try Self.function("nfs_flock", in: before)
        let shipped = try Self.function("nfs_flock", in: kernel.nfsKo.path)
        #expect(rebuilt.bytes.count == shipped.bytes.count)
        var compared = 0
        for i in 0..<min(rebuilt.bytes.count, shipped.bytes.count) where rebuilt.mask[i] != 0 && shipped.mask[i] != 0 {
            #expect(rebuilt.bytes[i] == shipped.bytes[i], "nfs_flock+\(Hex.address(UInt64(i))): rebuilt \(rebuilt.bytes[i]) shipped \(shipped.bytes[i])")
            compared += 1
        }
        #expect(compared > rebuilt.bytes.count / 2)
        #expect(rebuilt.bytes[0x2f] == 0x74 && rebuilt.bytes[0x30] == 0x39)

        // The patched rebuild differs in one byte of the whole file: nfs_flock+0x2f, je -> jne.
        let a = try Data(contentsOf: URL(fileURLWithPath: before)), b = try Data(contentsOf: URL(fileURLWithPath: after))
        #expect(a.count == b.count)
        let differing = zip(a, b).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
        #expect(differing.count == 1)
        let patched = try Self.function("nfs_flock", in: after)
        #expect(patched.bytes[0x2f] == 0x75)
        #expect(patched.bytes.enumerated().filter { $0.element != rebuilt.bytes[$0.offset] }.map(\.offset) == [0x2f])

        // The same tree named with --kernel-source, the image's config, --release and --image: the
        // same prepared tree (no prepare phase runs again) and the same bundle.
        let (debian, tree) = try Self.debian()
        let otherPath = folder.appendingPathComponent("kernel-source.bundle.json").path
        let other = try Fixtures.suture(["build", "--kernel-source", tree.root, "--config", debian.config,
                                         "--release", Self.release, "--image", kernel.vmlinuz.path, patch, "-o", otherPath])
        #expect(other.status == 0, "\(other.stdout)\n\(other.stderr)")
        #expect(other.stdout.contains("modules_prepare  cached"))
        let otherBundle = try PatchBundle.load(path: otherPath)
        #expect(otherBundle.hunks == bundle.hunks)
        #expect(otherBundle.target == bundle.target)
        #expect(otherBundle.functions == bundle.functions)
        #expect(otherBundle.id == bundle.id)
    }

    @Test("a string literal of nfs.ko's file.o (\"NFS: flock(\" → \"NFS: FLOCK(\"): judged with Debian's nfs.ko, a hunk whose bytes are the shipped module's")
    func nfsStringEndToEnd() throws {
        let kernel = try Fixtures.debianKernel()
        let folder = try Fixtures.temporaryFolder("suture-build-string")
        defer { try? FileManager.default.removeItem(at: folder) }
        let bundlePath = folder.appendingPathComponent("text.bundle.json").path
        let patch = Fixtures.sourcesFolder.appendingPathComponent("nfs_flock_text.patch").path
        let result = try Fixtures.suture(["build", "--debian-kernel", Self.release, patch, "-o", bundlePath])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")

        let bundle = try PatchBundle.load(path: bundlePath)
        let hunk = try #require(bundle.hunks.count == 1 ? bundle.hunks.first : nil, "\(bundle.hunks)")
        let original = Array("NFS: flock(%pD2, t=%x, fl=%x)\n\0".utf8), patched = Array("NFS: FLOCK(%pD2, t=%x, fl=%x)\n\0".utf8)
        #expect(hunk.symbol == nil && hunk.expected == original && hunk.replacement == patched)
        let reference = try #require(hunk.reference)
        #expect(reference.module == "nfs" && reference.encoding == .abs32s)
        #expect(result.stdout.contains("1 hunk in the string at \(hunk.location)"), "\(result.stdout)")

        // readelf and nm on Debian's nfs.ko: the reference's field is a relocation into a string
        // section, and the bytes there are the hunk's expected bytes (the string and its NUL).
        let ko = kernel.nfsKo.path
        let symbols = try Fixtures.check("readelf", ["-sW", ko])
        var matching: [[Substring]] = []
        for line in symbols.split(separator: "\n") {
            // "   123: 0000000000000080    27 FUNC    LOCAL  DEFAULT    5 nfs_flock.cold"
            let fields: [Substring] = line.split(separator: " ")
            if fields.count >= 8, String(fields[7]) == reference.symbol, fields[3] == "FUNC" { matching.append(fields) }
        }
        let symbol = try #require(matching.count == 1 ? matching.first : nil, "\(reference.symbol) in \(ko): \(matching)")
        let value = try #require(UInt64(symbol[1], radix: 16))
        let sectionIndex = try #require(Int(symbol[6]))
        let headers = try Fixtures.check("readelf", ["-SW", ko])
        var sectionName: String?
        for line in headers.split(separator: "\n") {
            // "  [ 2] .text             PROGBITS ..."
            guard let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]") else { continue }
            let number = line[line.index(after: open)..<close].trimmingCharacters(in: .whitespaces)
            guard Int(number) == sectionIndex else { continue }
            sectionName = line[line.index(after: close)...].split(separator: " ").first.map(String.init)
        }
        let section = try #require(sectionName)
        let entry = try #require(try ReadelfOracle(ko).relocations[".rela" + section]?.first { $0.offset == value + reference.field })
        #expect(entry.type == "R_X86_64_32S" && entry.symbol.hasPrefix(".rodata.str"))
        let strings = try ReadelfOracle.hexDump(ko, section: entry.symbol)
        let at = Int(entry.target + reference.bias)
        #expect(Array(strings[at..<at + original.count]) == original)
    }
}
