import ArgumentParser
import Foundation
import Lab
import Patching
import Targets

/// `suture build`: from a kernel source patch to a bundle, by rebuilding the touched objects before
/// and after the patch exactly as the distribution built the kernel, and diffing them.
struct BuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Rebuild the objects a kernel source patch touches, before and after, and make a bundle of the difference.",
        discussion: """
            --debian-kernel RELEASE fetches the pinned source of that Debian kernel (linux-source-6.1 \
            6.1.192-2 for 6.1.0-56-amd64) and its image package into the cache (SUTURE_CACHE, default \
            ~/.cache/suture), prepares the tree once, and binds the bundle to the image's release and \
            build-id. --kernel-source DIR uses a tree you have, with --config (default DIR/.config); \
            give --release and --image to bind the bundle to a kernel.
            The tree is prepared once per config and compiler (olddefconfig, modules_prepare) and \
            patched in place; the original files are restored on every way out (a journal in \
            DIR/.suture restores them on the next run if the process was killed).
            """)

    @Option(name: .customLong("kernel-source"), help: ArgumentHelp("A kernel source tree.", valueName: "dir"))
    var kernelSource: String?

    @Option(name: .customLong("debian-kernel"), help: ArgumentHelp("A Debian kernel release with a pinned source.", valueName: "release"))
    var debianKernel: String?

    @Option(name: .long, help: ArgumentHelp("The config the kernel was built with (/boot/config-*).", valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("The compiler (CC=); default: the one CONFIG_CC_VERSION_TEXT names.", valueName: "program"))
    var cc: String?

    @Option(name: .long, help: ArgumentHelp("With --kernel-source: the release the bundle is for (uname -r).", valueName: "release"))
    var release: String?

    @Option(name: .long, help: ArgumentHelp("With --kernel-source: the kernel image (vmlinuz or vmlinux) whose build-id binds the bundle.", valueName: "file"))
    var image: String?

    @Option(name: .short, help: ArgumentHelp("Parallel make jobs (default: the number of CPUs).", valueName: "n"))
    var jobs: Int?

    @Option(name: .short, help: ArgumentHelp("Where to write the bundle (default: PATCH's name with .bundle.json).", valueName: "bundle"))
    var output: String?

    @Argument(help: ArgumentHelp("A unified diff of the kernel source (patch -p1).", valueName: "patch"))
    var patch: String

    func validate() throws {
        guard (kernelSource == nil) != (debianKernel == nil) else {
            throw ValidationError("give --kernel-source DIR or --debian-kernel RELEASE (one of them)")
        }
        if debianKernel != nil, release != nil || image != nil {
            throw ValidationError("--release and --image go with --kernel-source; a Debian kernel names its own")
        }
        if let jobs, jobs < 1 { throw ValidationError("-j takes a positive number") }
    }

    func run() throws {
        let printer = PhasePrinter()
        // SIGINT, SIGTERM and SIGHUP stop the running tool and unwind the build, which restores the
        // tree, instead of killing suture with the tree patched (the journal would then restore it
        // on the next run). The signals are ignored for the process and read by dispatch sources.
        let interruption = BuildInterruption()
        let sources = [SIGINT, SIGTERM, SIGHUP].map { signalNumber in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { interruption.interrupt() }
            source.resume()
            return source
        }
        defer {
            for source in sources { source.cancel() }
            for signalNumber in [SIGINT, SIGTERM, SIGHUP] { signal(signalNumber, SIG_DFL) }
        }
        do {
            let sourcePatch = try SourcePatch(path: patch)
            let cache = LabPaths.defaultCache()
            let build: KernelBuild
            let identity: TargetIdentity?
            var modules: ShippedModules?
            if let debianKernel {
                let debian = try DebianKernelSource(release: debianKernel, cache: cache)
                try KernelBuildPrerequisites.check(KernelBuildPrerequisites.debian)
                print("suture build: \(patch) on Debian \(debianKernel) (\(debian.pin.sourcePackage) \(debian.pin.version))")
                let tree = try debian.ensure(progress: printer.report, interruption: interruption)
                identity = try KernelImageIdentity.read(image: debian.vmlinuz, release: debian.pin.release,
                                                        cacheFile: debian.identityCache, progress: printer.report)
                modules = debian.shippedModules
                build = KernelBuild(tree: tree, configFile: config ?? debian.config, compiler: cc, cache: cache,
                                    sourceLabel: "\(debian.pin.sourcePackage) \(debian.pin.version)", jobs: jobs,
                                    interruption: interruption)
            } else {
                let tree = try KernelSourceTree(root: kernelSource!)
                print("suture build: \(patch) on \(tree.root) (linux \(tree.version))")
                if let image {
                    identity = try KernelImageIdentity.read(image: image, release: release,
                                                            cacheFile: tree.stateFolder + "/image.build-id", progress: printer.report)
                } else {
                    identity = release.map { TargetIdentity(kind: .kernel, release: $0) }
                    printer.report(.note(release == nil
                        ? "no --release or --image: the bundle is bound to no kernel (apply needs --force identity)"
                        : "no --image: the bundle is bound to release \(release!) only, not to a build-id"))
                }
                build = KernelBuild(tree: tree, configFile: config ?? tree.dotConfig, compiler: cc, cache: cache, jobs: jobs,
                                    interruption: interruption)
            }
            let result = try build.buildObjects(patch: sourcePatch, progress: printer.report)
            let made = try result.bundle(identity: identity,
                                         description: "suture build \((patch as NSString).lastPathComponent) on \(build.sourceLabel) "
                                            + "(\(result.compiler.versionText))",
                                         modules: modules, progress: printer.report)
            let destination = output ?? Self.defaultOutput(for: patch)
            try made.bundle.save(path: destination)

            print("")
            for built in result.objects {
                print("object \(built.object)")
                print("  before  \(built.before)")
                print("  after   \(built.after)")
            }
            let terminal = isatty(STDOUT_FILENO) == 1
            for diff in made.diffs where !diff.isEmpty { print(diff.render(style: .unified, color: terminal)) }
            let hunks = made.bundle.hunks
            print("bundle \(destination): \(made.bundle.id), \(hunks.count) hunk\(hunks.count == 1 ? "" : "s"), bound to "
                  + Self.describe(identity))
            print("total \(PhasePrinter.format(printer.total()))")
        } catch let error as KernelBuildError {
            writeError("suture build: \(error)")
            if case .interrupted = error { throw ExitCode(130) }
            throw ExitCode(error.isRefusal ? ExitStatus.refused : ExitStatus.error)
        } catch {
            throw fail("build", error)
        }
    }
}

/// Prints one line when a phase starts and one when it ends, with its time, and sums the times.
final class PhasePrinter: @unchecked Sendable {
    private let started = ContinuousClock.now
    private let lock = NSLock()

    func report(_ event: KernelBuildEvent) {
        lock.lock()
        defer { lock.unlock() }
        switch event {
        case let .started(phase, detail):
            print("  \(Self.pad(phase.rawValue)) ...      \(detail)")
        case let .finished(phase, seconds, detail):
            print("  \(Self.pad(phase.rawValue)) \(Self.format(seconds).leftPadded(to: 8))  \(detail)")
        case let .skipped(phase, reason):
            print("  \(Self.pad(phase.rawValue)) cached    \(reason)")
        case let .note(text):
            print("  note: \(text)")
        }
        fflush(nil)   // one line per phase as it happens, also through a pipe
    }

    func total() -> Double {
        let elapsed = ContinuousClock.now - started
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    static func pad(_ text: String) -> String { text.padding(toLength: 16, withPad: " ", startingAt: 0) }

    static func format(_ seconds: Double) -> String { String(format: "%.1f s", seconds) }
}

private extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}

extension BuildCommand {
    /// `nfs_flock.patch` → `nfs_flock.bundle.json`, in the current folder.
    static func defaultOutput(for patch: String) -> String {
        var name = (patch as NSString).lastPathComponent
        for suffix in [".patch", ".diff"] where name.hasSuffix(suffix) { name.removeLast(suffix.count) }
        return name + ".bundle.json"
    }

    static func describe(_ identity: TargetIdentity?) -> String {
        guard let identity else { return "no kernel (apply needs --force identity)" }
        return [identity.release.map { "release \($0)" }, identity.buildID.map { "build-id \($0)" }]
            .compactMap { $0 }.joined(separator: ", ")
    }
}

extension KernelBuildError {
    /// Refusals (the inputs do not fit: another compiler, a patch that does not apply, a file that
    /// is no object's source) exit with the refused status; failures of the machinery with 1.
    var isRefusal: Bool {
        switch self {
        case .compilerMismatch, .compilerUnknown, .patchDoesNotApply, .unsupportedFile, .objectNotBuilt,
             .unknownDebianKernel, .patchEmpty, .patchMalformed:
            return true
        case let .diff(error):
            switch error {
            case .notApplicable, .nothingToPatch: return true
            default: return false
            }
        default:
            return false
        }
    }
}
