import Foundation
import Testing
import TestSupport
@testable import Lab

/// What `suture lab up --inside` carries, checked on the host (no VM): the `make inside` build is
/// taken with its few shared libraries; the debug build, a missing path and a non-ELF file are
/// refused naming the path and the make command. The guest running it is KmodTests.sutureInGuest.
@Suite("GuestSuture: the suture for the lab guest")
struct GuestSutureTests {
    /// The `make inside` build of this checkout; `make test` builds it before the tests.
    static var insideBinary: String { GuestSuture.defaultBinary(sourceRoot: Fixtures.repoRoot.path) }

    @Test("the make inside build: no Swift runtime library, capstone and libc carried at the loader's paths, and it runs")
    func insideBuild() throws {
        let guest = try GuestSuture(binary: Self.insideBinary)
        let names = guest.libraries.map { URL(fileURLWithPath: $0.guestPath).lastPathComponent }
        #expect(!names.contains { $0.hasPrefix("libswift") || $0.contains("Foundation") || $0.hasPrefix("libdispatch") }, "\(names)")
        #expect(names.contains { $0.hasPrefix("libcapstone.so") } && names.contains("libc.so.6"), "\(names)")
        // Each library goes where the loader looks (ldd's path) with the contents of a regular file.
        for library in guest.libraries {
            #expect(!library.guestPath.hasPrefix("/") && library.hostPath.hasPrefix("/"), "\(library)")
            let type = try FileManager.default.attributesOfItem(atPath: library.hostPath)[.type] as? FileAttributeType
            #expect(type == .typeRegular, "\(library.hostPath) is \(String(describing: type))")
        }
        let files = guest.files(module: "/nonexistent/suture.ko")
        #expect(files.prefix(2).map(\.guestPath) == [GuestSuture.moduleGuestPath, GuestSuture.binaryGuestPath])
        #expect(files[1].hostPath == Self.insideBinary && files[1].mode == 0o755)
        #expect(files.count == 2 + guest.libraries.count)
        // ldd itself, the oracle: the binary starts on the host with only these libraries.
        let ldd = try Fixtures.check("ldd", [Self.insideBinary])
        #expect(!ldd.contains("libswiftCore") && !ldd.contains("libFoundation"), "\(ldd)")
        let help = try Fixtures.run(Self.insideBinary, ["kmod", "--help"])
        #expect(help.status == 0 && help.stdout.contains("status"), "\(help.stderr)")
    }

    @Test("the debug build (Swift runtime as shared libraries) is refused, naming the libraries and make inside")
    func debugBuildRefused() throws {
        let debug = Fixtures.repoRoot.appendingPathComponent(".build/debug/suture").path
        let ldd = try Fixtures.check("ldd", [debug])
        try #require(ldd.contains("libswiftCore.so"), "the debug build was expected to load libswiftCore.so: \(ldd)")
        let error = try #require(throws: LabError.self) { try GuestSuture(binary: debug) }
        guard case .guestBinaryUnsuitable(let path, _, let found) = error else {
            Issue.record("expected guestBinaryUnsuitable, got \(error)"); return
        }
        #expect(path == debug && found.contains("libswiftCore.so") && found.contains("libFoundation"), "\(found)")
        #expect(error.description.contains("--static-swift-stdlib") && error.description.contains("`make inside`"), "\(error)")
    }

    @Test("a missing build names its path and where to run make inside; a non-ELF file and a static executable")
    func missingAndOtherFiles() throws {
        let folder = try Fixtures.temporaryFolder("suture-guest")
        defer { try? FileManager.default.removeItem(at: folder) }
        let missing = GuestSuture.defaultBinary(sourceRoot: folder.path)
        let error = try #require(throws: LabError.self) { try GuestSuture(binary: missing) }
        #expect(error.description.contains(missing) && error.description.contains("run `make inside` in \(folder.path)"), "\(error)")

        let script = folder.appendingPathComponent("suture").path
        try "#!/bin/sh\necho hello\n".write(toFile: script, atomically: true, encoding: .utf8)
        let notELF = try #require(throws: LabError.self) { try GuestSuture(binary: script) }
        #expect(notELF.description.contains(script) && notELF.description.contains("expected an x86-64 ELF executable"), "\(notELF)")

        // No program interpreter: nothing besides the binary goes along.
        let hello = try Fixtures.compileC("int main(void) { return 0; }\n", name: "hello", flags: ["-static"], in: folder)
        let guest = try GuestSuture(binary: hello.path)
        #expect(guest.libraries.isEmpty && guest.files(module: "/m.ko").count == 2)
    }

    @Test("suture lab up --inside --binary MISSING fails before building or booting; --binary needs --inside")
    func commandLine() throws {
        let run = try Fixtures.temporaryFolder("suture-lab")
        defer { try? FileManager.default.removeItem(at: run) }
        let missing = run.appendingPathComponent("no-such-suture").path
        let environment = ["SUTURE_LAB_RUN": run.path, "SUTURE_CACHE": Fixtures.cacheFolder.path]
        let up = try Fixtures.suture(["lab", "up", "--inside", "--binary", missing], environment: environment)
        #expect(up.status == 1 && up.stderr.contains("\(missing) does not exist") && up.stderr.contains("make inside"), "\(up.stderr)")
        #expect(!up.stderr.contains("building"), "the module was built before the binary was checked: \(up.stderr)")
        #expect(!FileManager.default.fileExists(atPath: run.appendingPathComponent("state.json").path))
        let alone = try Fixtures.suture(["lab", "up", "--binary", missing], environment: environment)
        #expect(alone.status == 2 && alone.stderr.contains("--binary goes with --inside"), "\(alone.stderr)")
    }
}
