import ELF
import Foundation
import Targets
#if canImport(Glibc)
import Glibc
#endif

/// Rebuilds the objects a source patch touches, before and after the patch, the way the
/// distribution built the kernel, so that their difference is the difference the patch makes to
/// the running kernel's code.
///
/// For Debian 6.1 that is `CC=gcc-12`, the image's config with `MODULE_SIG_ALL` off (it only makes
/// the build generate a signing key; no code changes), `make olddefconfig`, `make modules_prepare`
/// (objtool, genksyms, generated headers: what compiling single objects needs), then
/// `make fs/nfs/file.o`. Debian's objects come out byte for byte (see LAB.md).
///
/// Order of a run, cheapest refusals first: recover a journal left by an interrupted build; check
/// the patch's files; check the compiler against the config; `patch --dry-run`; check the build
/// prerequisites; prepare the tree (cached by a stamp keyed by config, compiler and source);
/// find each file's object and module; build before; apply; build after; restore.
public struct KernelBuild: Sendable {
    public var tree: KernelSourceTree
    /// The config the kernel was built with (`/boot/config-*`).
    public var configFile: String
    /// `CC=`; nil takes the program `CONFIG_CC_VERSION_TEXT` names.
    public var compiler: String?
    /// Where built objects are kept (`<cache>/kernel-build/...`).
    public var cache: String
    /// Names the source in cache keys and messages (`linux-source-6.1 6.1.192-2`).
    public var sourceLabel: String
    public var jobs: Int
    /// Stops the build when interrupted; the tree is restored on the way out.
    public var interruption: BuildInterruption?

    public init(tree: KernelSourceTree, configFile: String, compiler: String? = nil, cache: String,
                sourceLabel: String? = nil, jobs: Int? = nil, interruption: BuildInterruption? = nil) {
        self.interruption = interruption
        self.tree = tree
        self.configFile = configFile
        self.compiler = compiler
        self.cache = cache
        self.sourceLabel = sourceLabel ?? "linux \(tree.version)"
        self.jobs = max(1, jobs ?? ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Bumped when the way a tree is prepared changes, so older stamps are not trusted.
    static let prepareFormat = "suture-prepare-1"

    // MARK: Running

    /// Builds the patch's objects before and after it. The tree is restored whatever happens; a
    /// build killed outright leaves a journal that the next run restores first.
    public func buildObjects(patch: SourcePatch, progress: KernelBuildProgress) throws(KernelBuildError) -> KernelBuildResult {
        try makeDirectory(tree.stateFolder)
        let lock = try FileLock(tree.lockFile, throwing: KernelBuildError.self)
        defer { withExtendedLifetime(lock) {} }

        let restored = try SourceTreeJournal.recover(tree: tree.root, journal: tree.journal)
        if !restored.isEmpty {
            progress(.note("restored \(restored.joined(separator: ", ")) in \(tree.root), left patched by an interrupted build"))
        }
        let sources = try checkFiles(of: patch)
        let inputConfig = try KernelConfig(path: configFile)
        let compiler = try CompilerCheck.verify(config: inputConfig, compiler: self.compiler)
        try SourceTreeJournal.checkApplies(patch, tree: tree.root)
        try KernelBuildPrerequisites.check(KernelBuildPrerequisites.build)

        let (config, key) = try prepare(inputConfig, compiler: compiler, progress: progress)
        var objects: [KernelObject] = []
        for source in sources { objects.append(try tree.object(for: source, config: config)) }

        let folder = objectsFolder(key: key, patch: patch)
        try compile(objects, phase: .buildBefore, compiler: compiler, into: folder + "/before", progress: progress)
        let applied = try SourceTreeJournal.apply(patch, tree: tree.root, journal: tree.journal)
        do {
            try compile(objects, phase: .buildAfter, compiler: compiler, into: folder + "/after", progress: progress)
        } catch {
            try applied.restore()
            throw error
        }
        try applied.restore()
        let built = objects.map { object in
            BuiltObject(object: object, before: folder + "/before/" + object.object, after: folder + "/after/" + object.object)
        }
        return KernelBuildResult(tree: tree, compiler: compiler, config: config, objects: built,
                                 restoredFromJournal: restored, folder: folder)
    }

    // MARK: Steps

    /// Each file must be an existing `.c` in the tree that the patch changes (not creates or deletes).
    func checkFiles(of patch: SourcePatch) throws(KernelBuildError) -> [String] {
        var sources: [String] = []
        for change in patch.files {
            let file = change.path
            func refuse(_ reason: String) -> KernelBuildError { .unsupportedFile(patch: patch.path, file: file, reason: reason) }
            if file.hasPrefix("/") || file.split(separator: "/").contains("..") {
                throw refuse("the path leaves the tree")
            }
            if change.isNew { throw refuse("the patch creates this file: new code cannot be patched in place") }
            if change.isDeleted { throw refuse("the patch deletes this file: removed code cannot be patched in place") }
            if file.hasSuffix(".h") {
                throw refuse("a header: every object that includes it may change, and Suture builds only the objects of the patched .c files; patch the .c files instead")
            }
            guard file.hasSuffix(".c") else {
                throw refuse("not a C source (.c): only changes to C files compiled into objects can be rebuilt and diffed")
            }
            guard FileManager.default.fileExists(atPath: tree.root + "/" + file) else {
                throw refuse("no such file in \(tree.root)")
            }
            if !sources.contains(file) { sources.append(file) }
        }
        return sources
    }

    /// The cache key of a prepared tree: what `olddefconfig` and `modules_prepare` depend on (the
    /// config, the compiler, the source version), not how the tree was named on the command line.
    func prepareKey(_ config: KernelConfig, compiler: CompilerCheck) -> String {
        ContentHash.hex(ContentHash.fnv1a(Array(Self.prepareFormat.utf8), config.contents, Array(compiler.compiler.utf8),
                                          Array(compiler.versionText.utf8), Array(tree.version.utf8)))
    }

    /// Files `modules_prepare` leaves that compiling an object needs: a stamp alone is not trusted.
    static let preparedFiles = ["include/generated/autoconf.h", "include/config/auto.conf", "tools/objtool/objtool",
                                "scripts/mod/modpost", "scripts/basic/fixdep"]

    /// `.config` from the input config with MODULE_SIG_ALL off, `olddefconfig`, `modules_prepare`;
    /// skipped when the stamp matches. Returns the config kbuild builds with and the stamp key.
    ///
    /// The stamp holds two keys: the input config's, and the resulting `.config`'s, so that
    /// building again from the tree's own `.config` (`--kernel-source` without `--config`) finds
    /// the tree prepared too.
    func prepare(_ input: KernelConfig, compiler: CompilerCheck,
                 progress: KernelBuildProgress) throws(KernelBuildError) -> (KernelConfig, String) {
        let key = prepareKey(input, compiler: compiler)
        let stamp = FileManager.default.contents(atPath: tree.prepareStamp)
            .map { String(decoding: $0, as: UTF8.self).split(whereSeparator: \.isWhitespace).map(String.init) } ?? []
        let complete = Self.preparedFiles.allSatisfy { FileManager.default.fileExists(atPath: tree.root + "/" + $0) }
        if stamp.count == 2, stamp.contains(key), complete, FileManager.default.fileExists(atPath: tree.dotConfig) {
            progress(.skipped(.olddefconfig, reason: "prepared before (stamp \(stamp[0]))"))
            progress(.skipped(.modulesPrepare, reason: "prepared before (stamp \(stamp[0]))"))
            return (try KernelConfig(path: tree.dotConfig), stamp[0])
        }
        unlink(tree.prepareStamp)
        try makeDirectory(tree.logs)

        var started = KernelBuildClock.now
        progress(.started(.olddefconfig, detail: "\(configFile) with MODULE_SIG_ALL off, CC=\(compiler.compiler)"))
        do {
            try Data(input.contents).write(to: URL(fileURLWithPath: tree.dotConfig))
        } catch {
            throw .io(path: tree.dotConfig, operation: "write", errno: errno == 0 ? EIO : errno)
        }
        // MODULE_SIG_ALL only makes `make modules` generate a key and sign; code is unchanged.
        try HostTool.check(tree.root + "/scripts/config", ["--file", tree.dotConfig, "--disable", "MODULE_SIG_ALL"],
                           in: tree.root, package: "the kernel tree's scripts/config", interruption: interruption,
                           throwing: KernelBuildError.self)
        let configCPU = try make(["olddefconfig"], compiler: compiler, log: tree.logs + "/olddefconfig.log")
        let config = try KernelConfig(path: tree.dotConfig)
        // Options the input sets to another value matter (the source is not the kernel's own, or
        // the compiler differs); options it does not mention at all get kconfig's defaults (Debian's
        // shipped configs omit a few empty strings such as CONFIG_BUILD_SALT).
        let changed = input.values.keys.filter { $0 != "CONFIG_MODULE_SIG_ALL" && config.values[$0] != input.values[$0] }.sorted()
        let added = config.values.keys.filter { input.values[$0] == nil && $0 != "CONFIG_MODULE_SIG_ALL" }.sorted()
        if !changed.isEmpty {
            progress(.note("olddefconfig changed \(changed.count) option(s) of \(configFile): "
                           + changed.prefix(8).map { "\($0) \(input.values[$0] ?? "") -> \(config.values[$0] ?? "(not set)")" }
                               .joined(separator: ", ") + (changed.count > 8 ? ", ..." : "")
                           + " (is the source the kernel's own?)"))
        }
        var summary = Self.cpu(configCPU) + "; " + (changed.isEmpty ? "config kept (MODULE_SIG_ALL off)" : "\(changed.count) option(s) changed")
        if !added.isEmpty { summary += "; defaults for \(added.count) unmentioned: " + added.joined(separator: ", ") }
        progress(.finished(.olddefconfig, seconds: KernelBuildClock.seconds(since: started), detail: summary))

        started = KernelBuildClock.now
        progress(.started(.modulesPrepare, detail: "make -j\(jobs) modules_prepare (once per config and source)"))
        let prepareCPU = try make(["-j\(jobs)", "modules_prepare"], compiler: compiler, log: tree.logs + "/modules_prepare.log")
        let resultKey = prepareKey(config, compiler: compiler)
        do {
            try Data((key + " " + resultKey + "\n").utf8).write(to: URL(fileURLWithPath: tree.prepareStamp))
        } catch {
            throw .io(path: tree.prepareStamp, operation: "write", errno: errno == 0 ? EIO : errno)
        }
        progress(.finished(.modulesPrepare, seconds: KernelBuildClock.seconds(since: started), detail: Self.cpu(prepareCPU) + "; stamp \(key)"))
        return (config, key)
    }

    /// Removes the objects (so they are compiled from the tree as it is now, whatever make thinks
    /// of their timestamps), builds them with one make, checks kbuild compiled each as the Makefile
    /// says (module or built in), and copies them into `folder`.
    func compile(_ objects: [KernelObject], phase: KernelBuildPhase, compiler: CompilerCheck, into folder: String,
                 progress: KernelBuildProgress) throws(KernelBuildError) {
        let started = KernelBuildClock.now
        let targets = objects.map(\.object)
        progress(.started(phase, detail: "make " + targets.joined(separator: " ")))
        for object in targets { unlink(tree.root + "/" + object) }
        let log = tree.logs + "/" + phase.rawValue.replacingOccurrences(of: " ", with: "-") + ".log"
        let cpu = try make(["-j\(jobs)"] + targets, compiler: compiler, log: log)
        for object in objects {
            let built = tree.root + "/" + object.object
            guard FileManager.default.fileExists(atPath: built) else {
                throw .objectMissing(path: built, command: "make \(object.object)")
            }
            try checkCompiledAs(object)
            // Copied under a temporary name and renamed over the old copy: a reader of the cache
            // (another build of the same patch, a test) never sees a missing or half-written file.
            let kept = folder + "/" + object.object
            let temporary = kept + ".partial-\(getpid())"
            do {
                try FileManager.default.createDirectory(atPath: (kept as NSString).deletingLastPathComponent,
                                                        withIntermediateDirectories: true)
                try? FileManager.default.removeItem(atPath: temporary)
                try FileManager.default.copyItem(atPath: built, toPath: temporary)
            } catch {
                throw .io(path: kept, operation: "copy \(built) to", errno: errno == 0 ? EIO : errno)
            }
            guard rename(temporary, kept) == 0 else {
                let code = errno
                unlink(temporary)
                throw .io(path: kept, operation: "rename \(temporary) to", errno: code)
            }
        }
        progress(.finished(phase, seconds: KernelBuildClock.seconds(since: started),
                           detail: Self.cpu(cpu) + "; " + targets.joined(separator: " ")))
    }

    /// kbuild's compile command (saved in `.file.o.cmd`) must agree with the Makefile reading:
    /// `-DMODULE` and `-DKBUILD_MODNAME` for a module's part, no `-DMODULE` for built-in code.
    func checkCompiledAs(_ object: KernelObject) throws(KernelBuildError) {
        let expected = object.module.map { "part of module \($0)" } ?? "built-in code"
        guard let kbuild = tree.compiledAs(object.object) else {
            throw .membershipMismatch(object: object.object, makefile: object.reason, expected: expected,
                                      kbuild: "unknown (no .\((object.object as NSString).lastPathComponent).cmd)")
        }
        let found = kbuild.isModule ? "part of module \(kbuild.moduleName ?? "?")" : "built-in code"
        guard found == expected else {
            throw .membershipMismatch(object: object.object, makefile: object.reason, expected: expected, kbuild: found)
        }
    }

    /// Runs make with `CC=`; returns the CPU seconds it used.
    @discardableResult
    private func make(_ arguments: [String], compiler: CompilerCheck, log: String) throws(KernelBuildError) -> Double {
        try makeDirectory((log as NSString).deletingLastPathComponent)
        return try HostTool.check("make", ["CC=\(compiler.compiler)"] + arguments, in: tree.root, output: .log(log),
                                  package: "make", interruption: interruption, throwing: KernelBuildError.self).cpuSeconds
    }

    static func cpu(_ seconds: Double) -> String { String(format: "cpu %.1f s", seconds) }

    /// `<cache>/kernel-build/<source>-<stamp>/<patch hash>`: both objects stay there after the run.
    func objectsFolder(key: String, patch: SourcePatch) -> String {
        let label = sourceLabel.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" }
        return cache + "/kernel-build/" + String(label) + "-" + key.prefix(8) + "/" + ContentHash.hex(patch.contentHash)
    }

    private func makeDirectory(_ path: String) throws(KernelBuildError) {
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw .io(path: path, operation: "create directory", errno: errno == 0 ? EIO : errno)
        }
    }
}

/// One object, built from the tree before and after the patch.
public struct BuiltObject: Sendable, Hashable {
    public var object: KernelObject
    /// The unpatched build, kept in the cache.
    public var before: String
    /// The patched build, kept in the cache.
    public var after: String
}

extension KernelBuildResult {
    /// Compares each object before and after (ObjectDiff, with the object's module) and makes one
    /// bundle of all their hunks, bound to `identity`. Objects the patch left equal contribute
    /// nothing; every reason a change cannot be made in place is reported together. Reported as
    /// the `diff` phase.
    ///
    /// With `modules` (the kernel package's shipped `.ko` files), a module's object is diffed with
    /// its linked module at hand, which decides whether its changed string literals are shared.
    public func bundle(identity: TargetIdentity?, description: String, modules: ShippedModules? = nil,
                       progress: KernelBuildProgress) throws(KernelBuildError) -> KernelBuildBundle {
        let started = KernelBuildClock.now
        progress(.started(.diff, detail: objects.map(\.object.object).joined(separator: " ")))
        var diffs: [ObjectDiff] = []
        for built in objects {
            do {
                let before = try ELFFile(path: built.before), after = try ELFFile(path: built.after)
                let linked = try built.object.module.flatMap { modules?.path(ofModule: $0) }.map { try ELFFile(path: $0) }
                if let module = built.object.module, let modules, linked == nil {
                    progress(.note("no \(module).ko in \(modules.modulesRoot): string literals of \(built.object.object) cannot be judged"))
                }
                diffs.append(try ObjectDiff(original: before, patched: after,
                                            options: .init(module: built.object.module, linkedModule: linked)))
            } catch let error as ObjectDiffError {
                throw .diff(error)
            } catch let error as ELFError {
                throw .diff(.elf(error))
            } catch {
                throw .diff(.incompatible(original: built.before, patched: built.after, reason: "\(error)"))
            }
        }
        let reasons = diffs.flatMap(\.notApplicable)
        guard reasons.isEmpty else {
            throw .diff(.notApplicable(original: objects.map(\.before).joined(separator: ", "),
                                       patched: objects.map(\.after).joined(separator: ", "), reasons: reasons))
        }
        let hunks = diffs.flatMap(\.hunks)
        guard !hunks.isEmpty else {
            throw .diff(.nothingToPatch(original: objects.map(\.before).joined(separator: ", "),
                                        patched: objects.map(\.after).joined(separator: ", ")))
        }
        let images = diffs.flatMap(\.images)
        let bundle = PatchBundle(description: description, target: identity, architecture: diffs.first?.architecture?.rawValue,
                                 hunks: hunks, functions: images.isEmpty ? nil : images)
        // A string hunk has no symbol of its own: it is named by the reference that finds it.
        let places = Set(hunks.map { hunk in hunk.symbol ?? hunk.reference.map { "the string at " + $0.location } ?? hunk.location })
        progress(.finished(.diff, seconds: KernelBuildClock.seconds(since: started),
                           detail: "\(hunks.count) hunk\(hunks.count == 1 ? "" : "s") in \(places.sorted().joined(separator: ", "))"))
        return KernelBuildBundle(diffs: diffs, bundle: bundle)
    }
}

/// The difference of a build's objects, and the bundle that makes it in place.
public struct KernelBuildBundle: Sendable {
    /// One per object, in the patch's order.
    public var diffs: [ObjectDiff]
    public var bundle: PatchBundle
}

/// What `KernelBuild.buildObjects` produced.
public struct KernelBuildResult: Sendable {
    public var tree: KernelSourceTree
    public var compiler: CompilerCheck
    /// The config the objects were built with (`.config` after olddefconfig).
    public var config: KernelConfig
    public var objects: [BuiltObject]
    /// Files a previous, interrupted build had left patched and this run restored first.
    public var restoredFromJournal: [String]
    /// The folder holding `before/` and `after/`.
    public var folder: String
}
