import Foundation
import ELF
import Patching

/// What carries Suture into the lab guest (`suture lab up --inside`): a `suture` binary with the
/// Swift runtime and Foundation linked in statically, the shared libraries it still needs
/// (capstone, lzma, zstd, zlib, libstdc++, libc: whatever ldd names), and the helper module
/// built for the lab's kernel.
///
/// The binary is the one `make inside` builds (`.build-inside/release/suture` in the checkout),
/// unless another is named. A binary that loads the Swift runtime as shared libraries is refused:
/// with the toolchain's libraries it puts 110 MB into the guest's RAM (the initramfs is unpacked
/// there; `up --inside` used to raise the guest to 1 GB for it), the static build 75 MB, which the
/// lab's default 512 MB hold with 340 MB to spare.
public struct GuestSuture: Sendable {
    /// Where the module lands in the guest; `suture kmod load --module` takes this path.
    public static let moduleGuestPath = "lib/suture/extra/suture.ko"
    /// Where the binary lands in the guest (on its PATH).
    public static let binaryGuestPath = "sbin/suture"
    /// The build `make inside` produces, relative to the checkout. The Makefile's `inside` target
    /// names the same scratch path.
    public static let buildPath = ".build-inside/release/suture"
    /// The command that produces `buildPath`, for error messages.
    public static let buildCommand = "make inside"
    /// File-name prefixes of the Swift runtime's shared libraries (the toolchain's
    /// usr/lib/swift/linux): none of these may be loaded by the guest's binary.
    static let runtimePrefixes = ["libswift", "libFoundation", "lib_Foundation", "libdispatch", "libBlocksRuntime"]

    /// The host binary.
    public let binary: String
    /// The shared libraries the binary loads, each at the path the loader asks for, with the
    /// contents of the file it resolves to (the guest has no symlinks to follow).
    public let libraries: [LabExtraFile]

    /// The binary `make inside` built in the checkout at `sourceRoot`.
    public static func defaultBinary(sourceRoot: String) -> String {
        sourceRoot + "/" + buildPath
    }

    /// Checks that `binary` is an x86-64 executable that does not load the Swift runtime
    /// dynamically, and lists the libraries it does load.
    public init(binary: String) throws(LabError) {
        guard Files.exists(binary) else { throw .guestBinaryMissing(path: binary) }
        let elf: ELFFile
        do {
            elf = try ELFFile(path: binary)
        } catch {
            throw .guestBinaryUnsuitable(path: binary, expected: "an x86-64 ELF executable", found: "\(error)")
        }
        guard elf.header.machine == .x86_64, elf.header.type == .executable || elf.header.type == .sharedObject else {
            throw .guestBinaryUnsuitable(path: binary, expected: "an x86-64 ELF executable",
                                         found: "\(elf.header.type) for \(elf.header.machine)")
        }
        self.binary = binary
        // No program interpreter: a fully static executable, nothing to carry along.
        guard elf.segments.contains(where: { $0.type == ELFConstants.PT_INTERP }) else {
            libraries = []
            return
        }
        let result = try HostTool.run("ldd", [binary], package: "libc-bin", throwing: LabError.self)
        guard result.status == 0 else {
            throw .commandFailed(command: "ldd \(binary)", status: result.status, output: result.output)
        }
        var libraries: [LabExtraFile] = []
        for line in result.stdout.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.contains("not") { throw .libraryMissing(binary: binary, library: String(fields[0])) }
            guard let path = fields.first(where: { $0.hasPrefix("/") }).map(String.init) else { continue }
            // The guest gets the library's contents under the name the loader asks for.
            libraries.append(LabExtraFile(guestPath: String(path.dropFirst()),
                                          hostPath: URL(fileURLWithPath: path).resolvingSymlinksInPath().path, mode: 0o755))
        }
        let runtime = libraries.filter { library in
            let name = URL(fileURLWithPath: library.guestPath).lastPathComponent
            return Self.runtimePrefixes.contains { name.hasPrefix($0) }
        }
        guard runtime.isEmpty else {
            let urls = runtime.map { URL(fileURLWithPath: "/" + $0.guestPath) }
            var folders: [String] = []
            for folder in urls.map({ $0.deletingLastPathComponent().path }) where !folders.contains(folder) { folders.append(folder) }
            throw .guestBinaryUnsuitable(path: binary,
                                         expected: "the Swift runtime and Foundation linked in statically (swift build --static-swift-stdlib)",
                                         found: "\(runtime.count) runtime shared libraries (" + urls.map(\.lastPathComponent).joined(separator: ", ")
                                             + " from " + folders.joined(separator: ", ") + ")")
        }
        self.libraries = libraries
    }

    /// The files for the guest's initramfs: the module, the binary, its libraries.
    public func files(module: String) -> [LabExtraFile] {
        [LabExtraFile(guestPath: Self.moduleGuestPath, hostPath: module),
         LabExtraFile(guestPath: Self.binaryGuestPath, hostPath: binary, mode: 0o755)] + libraries
    }
}
