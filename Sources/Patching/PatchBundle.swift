import Foundation
import ELF
import Targets

/// A patch: which target it is for, and the hunks to write. The versioned JSON document that
/// `suture diff`/`build` produce and `apply` consumes; `poke` and `flip` make one-hunk bundles so
/// that every write goes through the same engine and journal.
///
/// ```json
/// { "format": "suture-bundle", "version": 1, "id": "nfs-flock-3f1c…",
///   "target": { "kind": "kernel", "release": "6.1.0-56-amd64", "buildID": "…" },
///   "architecture": "x86_64",
///   "hunks": [ { "symbol": "nfs_flock", "module": "nfs", "offset": "0x2f",
///                "expected": "74", "replacement": "75" } ] }
/// ```
public struct PatchBundle: Sendable, Hashable, Codable {
    public static let formatName = "suture-bundle"
    public static let currentVersion = 1

    public var format: String = PatchBundle.formatName
    public var version: Int = PatchBundle.currentVersion
    /// Stable name used by the journal and `revert ID`. Derived from the content when not given.
    public var id: String
    public var description: String?
    /// The kernel or program the bundle was made for; nil binds to nothing (only `--force identity` applies it).
    public var target: TargetIdentity?
    /// `x86_64`, `i386` or `arm64`: the instruction set used for boundary checks.
    public var architecture: String?
    public var hunks: [Hunk]
    /// Whole functions as they must be before patching (run-pre match), when the bundle's maker knows them.
    public var functions: [FunctionImage]?

    public init(id: String? = nil, description: String? = nil, target: TargetIdentity?, architecture: String?,
                hunks: [Hunk], functions: [FunctionImage]? = nil) {
        self.description = description
        self.target = target
        self.architecture = architecture
        self.hunks = hunks
        self.functions = functions
        self.id = ""
        self.id = id ?? derivedID()
    }

    /// A short name from the first hunk's symbol plus a content hash (FNV-1a over the hunks), so that
    /// the same patch gets the same id however often it is made.
    public func derivedID() -> String {
        var hash: UInt64 = 0xcbf29ce484222325
        func mix(_ bytes: some Sequence<UInt8>) {
            for b in bytes { hash = (hash ^ UInt64(b)) &* 0x100000001b3 }
            hash = (hash ^ 0xff) &* 0x100000001b3
        }
        if let t = target { mix(Array((t.release ?? "").utf8)); mix(Array((t.buildID ?? "").utf8)) }
        for h in hunks {
            mix(Array(h.location.utf8)); mix(h.expected); mix(h.replacement); mix(h.mask ?? [])
        }
        let stem = (hunks.first?.symbol ?? "patch").map { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." ? $0 : "-" }
        return String(stem.prefix(32)) + "-" + String(Hex.padded(hash, width: 16).prefix(10))
    }

    // MARK: Files

    public static func load(path: String) throws(BundleError) -> PatchBundle {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw .unreadable(path: path, reason: "\(error.localizedDescription)")
        }
        return try decode(data, path: path)
    }

    public static func decode(_ data: Data, path: String) throws(BundleError) -> PatchBundle {
        let bundle: PatchBundle
        do { bundle = try JSONDecoder().decode(PatchBundle.self, from: data) } catch let error as DecodingError {
            throw .malformed(path: path, reason: BundleError.describe(error))
        } catch { throw .malformed(path: path, reason: "\(error)") }
        guard bundle.format == formatName else {
            throw .malformed(path: path, reason: "format is \"\(bundle.format)\", expected \"\(formatName)\"")
        }
        guard bundle.version <= currentVersion else {
            throw .unsupportedVersion(path: path, version: bundle.version, supported: currentVersion)
        }
        guard !bundle.hunks.isEmpty else { throw .malformed(path: path, reason: "it has no hunks") }
        return bundle
    }

    public func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding plain value types cannot fail.
        return (try? encoder.encode(self)) ?? Data()
    }

    public func save(path: String) throws(BundleError) {
        do { try encoded().write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw .unwritable(path: path, reason: "\(error.localizedDescription)")
        }
    }
}

/// The bytes a whole function must have before patching, with the mask of bytes the target rewrites
/// at run time (relocations, ftrace, alternatives...).
public struct FunctionImage: Sendable, Hashable, Codable {
    public var symbol: String
    public var module: String?
    public var ordinal: Int?
    public var bytes: [UInt8]
    public var mask: [UInt8]

    public init(symbol: String, module: String?, ordinal: Int? = nil, bytes: [UInt8], mask: [UInt8]) {
        self.symbol = symbol
        self.module = module
        self.ordinal = ordinal
        self.bytes = bytes
        self.mask = mask
    }

    enum CodingKeys: String, CodingKey { case symbol, module, ordinal, bytes, mask }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        symbol = try c.decode(String.self, forKey: .symbol)
        module = try c.decodeIfPresent(String.self, forKey: .module)
        ordinal = try c.decodeIfPresent(Int.self, forKey: .ordinal)
        bytes = try HexCoding.decodeBytes(c, .bytes)
        mask = try HexCoding.decodeBytes(c, .mask)
        guard mask.count == bytes.count else {
            throw DecodingError.dataCorruptedError(forKey: .mask, in: c, debugDescription: "mask has \(mask.count) bytes, bytes has \(bytes.count)")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(symbol, forKey: .symbol)
        try c.encodeIfPresent(module, forKey: .module)
        try c.encodeIfPresent(ordinal, forKey: .ordinal)
        try c.encode(Hex.bytes(bytes, separator: ""), forKey: .bytes)
        try c.encode(Hex.bytes(mask, separator: ""), forKey: .mask)
    }
}

public enum BundleError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case unwritable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case unsupportedVersion(path: String, version: Int, supported: Int)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): "\(path): cannot read the bundle: \(reason)"
        case let .unwritable(path, reason): "\(path): cannot write the bundle: \(reason)"
        case let .malformed(path, reason): "\(path): not a valid Suture bundle: \(reason)"
        case let .unsupportedVersion(path, version, supported):
            "\(path): bundle version \(version) is newer than this Suture understands (up to \(supported))"
        }
    }

    /// Names the JSON path and what was wrong, e.g. `hunks[0].expected: expected hex bytes…`.
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
                .trimmingPrefix(".").description
        }
        switch error {
        case let .dataCorrupted(ctx): return "\(path(ctx.codingPath)): \(ctx.debugDescription)"
        case let .keyNotFound(key, ctx): return "\(path(ctx.codingPath + [key])): missing"
        case let .typeMismatch(type, ctx): return "\(path(ctx.codingPath)): expected \(type)"
        case let .valueNotFound(type, ctx): return "\(path(ctx.codingPath)): expected \(type), found null"
        @unknown default: return "\(error)"
        }
    }
}
