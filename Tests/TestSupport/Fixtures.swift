import Foundation

/// Test inputs built or fetched at test time: nothing binary is committed.
///
/// - gcc builds small C sources from `Tests/Fixtures/` (or inline text) into a temporary folder.
/// - The Debian kernel package is downloaded once into the cache (`SUTURE_CACHE`, default
///   `~/.cache/suture`) by `make test` (`suture lab fetch`); tests that need it fail with the command
///   to run when it is missing, never skip silently.
public enum Fixtures {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// The repository's root folder (Package.swift lives here).
    public static let repoRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    /// Folder of C sources used as test inputs.
    public static var sourcesFolder: URL { repoRoot.appendingPathComponent("Tests/Fixtures") }

    /// The cache folder shared with the CLI (`SUTURE_CACHE`, default `~/.cache/suture`).
    public static var cacheFolder: URL {
        if let env = ProcessInfo.processInfo.environment["SUTURE_CACHE"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/suture")
    }

    /// A fresh temporary folder, removed by the OS' tmp cleaning; tests may delete it themselves.
    public static func temporaryFolder(_ label: String = "suture-test") throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(label)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    // MARK: Running tools

    public struct Output: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
        public let stdoutData: Data
    }

    /// Runs a program (looked up in PATH) and collects its output. Throws if it cannot start.
    @discardableResult
    public static func run(_ program: String, _ arguments: [String], input: Data? = nil,
                           environment: [String: String]? = nil, in folder: URL? = nil) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [program] + arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if let folder { process.currentDirectoryURL = folder }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let inPipe = Pipe()
        process.standardInput = input == nil ? FileHandle.nullDevice : inPipe
        try process.run()
        if let input {
            inPipe.fileHandleForWriting.write(input)
            try? inPipe.fileHandleForWriting.close()
        }
        // Read both pipes concurrently so a large stderr cannot block a large stdout.
        let group = DispatchGroup()
        nonisolated(unsafe) var errData = Data()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Output(status: process.terminationStatus,
                      stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self),
                      stdoutData: outData)
    }

    /// Runs a program and throws unless it exits 0; returns its standard output.
    @discardableResult
    public static func check(_ program: String, _ arguments: [String], in folder: URL? = nil) throws -> String {
        let result = try run(program, arguments, in: folder)
        guard result.status == 0 else {
            throw Failure("\(program) \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)")
        }
        return result.stdout
    }

    // MARK: gcc

    /// Compiles C source text with gcc. `flags` decide the output kind (`-c` for an object,
    /// `-shared -fPIC` for a library, nothing for an executable). Returns the output's path.
    public static func compileC(_ source: String, name: String, flags: [String] = ["-O2", "-c"],
                                in folder: URL? = nil) throws -> URL {
        let dir = try folder ?? temporaryFolder("suture-gcc")
        let src = dir.appendingPathComponent(name + ".c")
        try source.write(to: src, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent(name + (flags.contains("-c") ? ".o" : (flags.contains("-shared") ? ".so" : "")))
        try check("gcc", flags + ["-o", out.path, src.path])
        return out
    }

    /// Compiles a file from `Tests/Fixtures/`.
    public static func compileFixture(_ file: String, flags: [String] = ["-O2", "-c"],
                                      in folder: URL? = nil) throws -> URL {
        let text = try String(contentsOf: sourcesFolder.appendingPathComponent(file), encoding: .utf8)
        return try compileC(text, name: (file as NSString).deletingPathExtension, flags: flags, in: folder)
    }

    // MARK: The Debian kernel

    /// The pinned Debian kernel used by the lab and by the tests on real kernel files.
    public struct DebianKernel: Sendable {
        public static let release = "6.1.0-56-amd64"
        public static let version = "6.1.192-2"
        public let root: URL
        public var vmlinuz: URL { root.appendingPathComponent("boot/vmlinuz-\(Self.release)") }
        public var config: URL { root.appendingPathComponent("boot/config-\(Self.release)") }
        public var modules: URL { root.appendingPathComponent("lib/modules/\(Self.release)/kernel") }
        public var nfsKo: URL { modules.appendingPathComponent("fs/nfs/nfs.ko") }
        public func module(_ relative: String) -> URL { modules.appendingPathComponent(relative) }
    }

    /// The extracted kernel package, or a failure that says how to fetch it.
    public static func debianKernel() throws -> DebianKernel {
        let kernel = DebianKernel(root: cacheFolder.appendingPathComponent("kernel/\(DebianKernel.release)"))
        guard FileManager.default.fileExists(atPath: kernel.nfsKo.path) else {
            throw Failure("the Debian kernel package is not in \(kernel.root.path): run `make fetch` "
                          + "(or `suture lab fetch`) first")
        }
        return kernel
    }

    /// The vmlinux ELF decompressed from the Debian vmlinuz with the `xz` tool (an oracle independent
    /// of Suture's own decompressor). Cached next to the package.
    public static func debianVmlinux() throws -> URL {
        let kernel = try debianKernel()
        let out = cacheFolder.appendingPathComponent("kernel/vmlinux-\(DebianKernel.release).xz-tool")
        if FileManager.default.fileExists(atPath: out.path) { return out }
        let image = try Data(contentsOf: kernel.vmlinuz)
        let magic: [UInt8] = [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]
        guard let start = image.firstRange(of: Data(magic))?.lowerBound else {
            throw Failure("no XZ magic in \(kernel.vmlinuz.path)")
        }
        let tmp = out.appendingPathExtension("partial")
        // xz stops at the end of the stream and complains about trailing bytes: that is expected.
        let result = try run("sh", ["-c", "tail -c +\(start + 1) '\(kernel.vmlinuz.path)' | xz -dc --single-stream > '\(tmp.path)'"])
        guard result.status == 0 else { throw Failure("xz failed: \(result.stderr)") }
        try FileManager.default.moveItem(at: tmp, to: out)
        return out
    }
}

extension Fixtures {
    /// The `suture` binary built by `swift build`/`swift test` (`SUTURE_BINARY` overrides).
    public static func sutureBinary() throws -> URL {
        if let path = ProcessInfo.processInfo.environment["SUTURE_BINARY"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        for config in ["debug", "release"] {
            let url = repoRoot.appendingPathComponent(".build/\(config)/suture")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        throw Failure("no built suture binary under \(repoRoot.path)/.build: run `swift build` first")
    }

    /// Runs the built `suture` with `arguments`.
    @discardableResult
    public static func suture(_ arguments: [String], environment: [String: String]? = nil) throws -> Output {
        try run(try sutureBinary().path, arguments, environment: environment)
    }
}
