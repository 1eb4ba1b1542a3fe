import CLZMA
import CZlib
import CZstd
#if canImport(Glibc)
import Glibc
#endif

/// xz (liblzma), zstd (libzstd) and gzip (zlib) decoding into one growing buffer, for compressed
/// kernel modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) and kernel image payloads.
///
/// Every loop either makes progress or ends with an error, so corrupt input cannot hang; output is
/// capped at `outputLimit` so a decompression bomb cannot exhaust memory.
public enum Decompressor {
    /// Largest output accepted (4 GiB): far above any kernel or module.
    public static let outputLimit = 4 << 30

    /// Decodes an xz file (concatenated streams and stream padding allowed, nothing else after them).
    public static func xz(_ data: some Collection<UInt8>, name: String = "xz input") throws -> [UInt8] {
        try decodeToArray(.xz, data, name: name)
    }

    /// Decodes a zstd file (one or more frames, nothing after them).
    public static func zstd(_ data: some Collection<UInt8>, name: String = "zstd input") throws -> [UInt8] {
        try decodeToArray(.zstd, data, name: name)
    }

    /// Decodes a gzip file (one or more members, nothing after them).
    public static func gzip(_ data: some Collection<UInt8>, name: String = "gzip input") throws -> [UInt8] {
        try decodeToArray(.gzip, data, name: name)
    }

    // MARK: Internals

    enum Format: Sendable {
        case xz, zstd, gzip

        /// Recognizes the format by its magic number.
        init?(magicOf bytes: UnsafeRawBufferPointer) {
            func starts(_ magic: [UInt8]) -> Bool {
                bytes.count >= magic.count && zip(bytes, magic).allSatisfy { $0 == $1 }
            }
            if starts([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { self = .xz }
            else if starts([0x28, 0xB5, 0x2F, 0xFD]) { self = .zstd }
            else if starts([0x1F, 0x8B]) { self = .gzip }
            else { return nil }
        }

        var name: String {
            switch self {
            case .xz: return "xz"
            case .zstd: return "zstd"
            case .gzip: return "gzip"
            }
        }
    }

    struct Output {
        let storage: ByteStorage
        /// Input bytes the stream used; the rest is trailing data (such as the kernel's size trailer).
        let consumed: Int
    }

    private static func decodeToArray(_ format: Format, _ data: some Collection<UInt8>, name: String) throws(ELFError) -> [UInt8] {
        func run(_ raw: UnsafeRawBufferPointer) throws(ELFError) -> [UInt8] {
            let output = try decompress(format, raw, file: name, allowTrailingData: false)
            return Array(output.storage.bytes)
        }
        // The closures of withContiguousStorageIfAvailable/withUnsafeBytes rethrow untyped errors:
        // carry the typed error out in a Result.
        let result = data.withContiguousStorageIfAvailable { buffer in
            Result { () throws(ELFError) in try run(UnsafeRawBufferPointer(buffer)) }
        } ?? Array(data).withUnsafeBytes { raw in
            Result { () throws(ELFError) in try run(raw) }
        }
        return try result.get()
    }

    /// Decodes `input`. With `allowTrailingData`, decoding stops after the first stream/frame/member
    /// and the caller judges what follows; otherwise anything after the data is an error.
    /// `baseOffset` is where `input` starts in `file`, for messages.
    static func decompress(_ format: Format, _ input: UnsafeRawBufferPointer, file: String,
                           allowTrailingData: Bool, baseOffset: Int = 0) throws(ELFError) -> Output {
        var out = GrowingBuffer(file: file, format: format.name, baseOffset: baseOffset)
        let consumed: Int
        switch format {
        case .xz: consumed = try decodeXZ(input, into: &out, concatenated: !allowTrailingData)
        case .zstd: consumed = try decodeZstd(input, into: &out, stopAfterFirstFrame: allowTrailingData)
        case .gzip: consumed = try decodeGzip(input, into: &out, stopAfterFirstMember: allowTrailingData)
        }
        return Output(storage: out.finish(), consumed: consumed)
    }

    private static func decodeXZ(_ input: UnsafeRawBufferPointer, into out: inout GrowingBuffer,
                                 concatenated: Bool) throws(ELFError) -> Int {
        var stream = lzma_stream()
        let LZMA_CONCATENATED: UInt32 = 0x08   // a macro in container.h that Swift does not import
        let initResult = lzma_stream_decoder(&stream, UInt64.max, concatenated ? LZMA_CONCATENATED : 0)
        guard initResult == LZMA_OK else {
            throw out.error(at: 0, expected: "an initialized xz decoder", found: "lzma_stream_decoder error \(initResult.rawValue)")
        }
        defer { lzma_end(&stream) }
        stream.next_in = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.avail_in = input.count
        while true {
            let room = try out.reserve()
            stream.next_out = room.baseAddress?.assumingMemoryBound(to: UInt8.self)
            stream.avail_out = room.count
            // LZMA_FINISH: all input is there. No progress then yields LZMA_BUF_ERROR, so no hang.
            let result = lzma_code(&stream, LZMA_FINISH)
            out.commit(room.count - stream.avail_out)
            let position = input.count - stream.avail_in
            switch result {
            case LZMA_OK: continue
            case LZMA_STREAM_END: return position
            case LZMA_BUF_ERROR:
                throw out.error(at: position, expected: "the rest of the xz stream", found: "the end of the input (truncated)")
            case LZMA_FORMAT_ERROR:
                throw out.error(at: position, expected: "an xz stream header", found: "other bytes (LZMA_FORMAT_ERROR)")
            case LZMA_OPTIONS_ERROR:
                throw out.error(at: position, expected: "supported xz options", found: "unsupported ones (LZMA_OPTIONS_ERROR)")
            case LZMA_DATA_ERROR:
                throw out.error(at: position, expected: "valid xz data", found: "corrupt data (LZMA_DATA_ERROR)")
            case LZMA_MEM_ERROR, LZMA_MEMLIMIT_ERROR:
                throw out.error(at: position, expected: "memory for the decoder", found: "allocation failure")
            default:
                throw out.error(at: position, expected: "valid xz data", found: "lzma_code error \(result.rawValue)")
            }
        }
    }

    private static func decodeZstd(_ input: UnsafeRawBufferPointer, into out: inout GrowingBuffer,
                                   stopAfterFirstFrame: Bool) throws(ELFError) -> Int {
        guard let context = ZSTD_createDCtx() else {
            throw out.error(at: 0, expected: "a zstd decoder", found: "allocation failure")
        }
        defer { ZSTD_freeDCtx(context) }
        if let base = input.baseAddress {
            let size = ZSTD_getFrameContentSize(base, input.count)
            // Skip ZSTD_CONTENTSIZE_UNKNOWN (-1) and ZSTD_CONTENTSIZE_ERROR (-2).
            if size < UInt64.max - 1 { out.hint(Int(clamping: size)) }
        }
        var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        while true {
            // One frame.
            while true {
                let room = try out.reserve()
                var destination = ZSTD_outBuffer(dst: room.baseAddress, size: room.count, pos: 0)
                let before = source.pos
                let result = ZSTD_decompressStream(context, &destination, &source)
                out.commit(destination.pos)
                if ZSTD_isError(result) != 0 {
                    throw out.error(at: source.pos, expected: "valid zstd data",
                                    found: String(cString: ZSTD_getErrorName(result)))
                }
                if result == 0 { break }               // frame complete
                if source.pos == before && destination.pos == 0 {
                    throw out.error(at: source.pos, expected: "the rest of the zstd frame",
                                    found: "the end of the input (truncated)")
                }
            }
            if source.pos == source.size || stopAfterFirstFrame { return source.pos }
        }
    }

    private static func decodeGzip(_ input: UnsafeRawBufferPointer, into out: inout GrowingBuffer,
                                   stopAfterFirstMember: Bool) throws(ELFError) -> Int {
        guard input.count <= Int(UInt32.max) else {
            throw out.error(at: 0, expected: "at most 4 GiB of gzip input", found: "\(input.count) bytes")
        }
        var stream = z_stream()
        // 16 + 15: gzip wrapper only, 32 KiB window. (inflateInit2 is a macro.)
        let initResult = inflateInit2_(&stream, 16 + 15, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard initResult == Z_OK else {
            throw out.error(at: 0, expected: "an initialized zlib decoder", found: "inflateInit2 error \(initResult)")
        }
        defer { inflateEnd(&stream) }
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.avail_in = UInt32(input.count)
        while true {
            let room = try out.reserve()
            let chunk = min(room.count, Int(UInt32.max))
            stream.next_out = room.baseAddress?.assumingMemoryBound(to: UInt8.self)
            stream.avail_out = UInt32(chunk)
            let result = inflate(&stream, Z_NO_FLUSH)
            out.commit(chunk - Int(stream.avail_out))
            let position = input.count - Int(stream.avail_in)
            switch result {
            case Z_OK: continue
            case Z_STREAM_END:
                if stream.avail_in == 0 || stopAfterFirstMember { return position }
                // Another member follows (gzip files may be concatenated).
                guard inflateReset(&stream) == Z_OK else {
                    throw out.error(at: position, expected: "a resettable decoder", found: "inflateReset failure")
                }
            case Z_BUF_ERROR:
                // No progress possible: all input used without reaching the end of the member.
                throw out.error(at: position, expected: "the rest of the gzip member", found: "the end of the input (truncated)")
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "zlib error \(result)"
                throw out.error(at: position, expected: "valid gzip data", found: message)
            }
        }
    }
}

/// The decoder's output: a `malloc` buffer grown geometrically, handed to a `ByteStorage` at the end.
struct GrowingBuffer: ~Copyable {
    private var base: UnsafeMutableRawPointer?
    private var capacity = 0
    private(set) var count = 0
    let file: String
    let format: String
    let baseOffset: Int

    init(file: String, format: String, baseOffset: Int) {
        self.file = file
        self.format = format
        self.baseOffset = baseOffset
    }

    deinit { free(base) }

    /// Grows the first allocation to `size` when a header tells the final size. The header is input,
    /// so the hint is capped; a larger output still grows geometrically.
    mutating func hint(_ size: Int) {
        let size = min(size, 256 << 20)
        guard count == 0, size > capacity,
              let grown = realloc(base, size) else { return }
        base = grown
        capacity = size
    }

    /// Free space at the end (at least 64 KiB, growing by doubling).
    mutating func reserve() throws(ELFError) -> UnsafeMutableRawBufferPointer {
        if capacity - count < 1 << 16 {
            let wanted = min(max(capacity * 2, count + (1 << 20)), Decompressor.outputLimit + (1 << 16))
            guard count < Decompressor.outputLimit else {
                throw error(at: 0, expected: "at most \(Decompressor.outputLimit) bytes of output", found: "more")
            }
            guard let grown = realloc(base, wanted) else {
                throw error(at: 0, expected: "\(wanted) bytes of memory", found: "allocation failure")
            }
            base = grown
            capacity = wanted
        }
        return UnsafeMutableRawBufferPointer(start: base.map { $0 + count }, count: capacity - count)
    }

    mutating func commit(_ written: Int) { count += written }

    func error(at position: Int, expected: String, found: String) -> ELFError {
        .decompression(file: file, format: format, offset: UInt64(baseOffset + position), expected: expected,
                       found: found + " (after \(count) bytes of output)")
    }

    /// Hands the bytes to a storage (trimmed to size).
    consuming func finish() -> ByteStorage {
        let size = count
        var buffer = base
        base = nil
        if let current = buffer, size > 0, let trimmed = realloc(current, size) { buffer = trimmed }
        if size == 0 {
            free(buffer)
            return ByteStorage(copying: UnsafeRawBufferPointer(start: nil, count: 0))
        }
        // `buffer` is non-nil here: size > 0 means reserve() allocated it.
        guard let owned = buffer else { return ByteStorage(copying: UnsafeRawBufferPointer(start: nil, count: 0)) }
        return ByteStorage(adoptingMalloced: owned, count: size)
    }
}
