/// x86 `bzImage` files (`/boot/vmlinuz-*`): the real-mode setup code, then the protected-mode
/// decompressor, which carries the compressed `vmlinux` as its payload.
public enum KernelImage {
    /// Boot protocol fields (Documentation/arch/x86/boot.rst), as offsets in the file.
    enum SetupHeader {
        static let setupSectors = 0x1f1      // u8; 0 means 4
        static let magic = 0x202             // "HdrS"
        static let version = 0x206           // u16; payload fields exist from 2.08
        static let payloadOffset = 0x248     // u32, from the start of the protected-mode code
        static let payloadLength = 0x24c     // u32
        static let end = 0x250
        static let minimumVersion: UInt16 = 0x0208
    }

    /// Decompresses the payload of a bzImage: the kernel's `vmlinux` ELF (stripped), followed on
    /// relocatable x86 kernels by the relocation table the build appends. XZ, ZSTD and gzip payloads
    /// are supported. The kernel build appends the uncompressed size (4 bytes, little-endian) to xz
    /// and zstd payloads; when present it is checked against the output.
    public static func extractVmlinux(fromBzImage path: String) throws -> [UInt8] {
        try extract(path: path)
    }

    static func extract(path: String) throws(ELFError) -> [UInt8] {
        let storage = try ByteStorage.map(path: path)
        let reader = ByteReader(storage: storage, file: path)
        _ = try reader.range(0, UInt64(SetupHeader.end), "bzImage setup header")
        let magic = reader.prefix(at: SetupHeader.magic, limit: 4)
        guard magic == Array("HdrS".utf8) else {
            throw .malformed(file: path, structure: "bzImage setup header magic", offset: UInt64(SetupHeader.magic),
                             expected: "\"HdrS\" (48 64 72 53)", found: Hex.bytes(magic))
        }
        let version = reader.u16(SetupHeader.version)
        guard version >= SetupHeader.minimumVersion else {
            throw .unsupported(file: path, structure: "bzImage boot protocol version", offset: UInt64(SetupHeader.version),
                               expected: "2.08 or later (payload fields)", found: "\(version >> 8).\(String(format2: version & 0xff))")
        }
        var sectors = UInt64(reader.u8(SetupHeader.setupSectors))
        if sectors == 0 { sectors = 4 }
        let protectedModeStart = (sectors + 1) * 512
        let payloadOffset = UInt64(reader.u32(SetupHeader.payloadOffset))
        let payloadLength = UInt64(reader.u32(SetupHeader.payloadLength))
        let payloadStart = protectedModeStart + payloadOffset          // both below 2^33: no overflow
        let start = try reader.range(payloadStart, payloadLength,
                                     "bzImage payload (setup_sects \(sectors), payload_offset \(Hex.address(payloadOffset)))")
        let payload = UnsafeRawBufferPointer(start: storage.base + start, count: Int(payloadLength))
        guard let format = Decompressor.Format(magicOf: payload) else {
            throw .unsupported(file: path, structure: "bzImage payload", offset: payloadStart,
                               expected: "xz (fd 37 7a 58 5a 00), zstd (28 b5 2f fd) or gzip (1f 8b) data",
                               found: Hex.bytes(reader.prefix(at: start, limit: 6)) + describe(payload))
        }
        let output = try Decompressor.decompress(format, payload, file: path, allowTrailingData: true,
                                                 baseOffset: start)
        let trailing = payload.count - output.consumed
        switch trailing {
        case 0:
            break
        case 4:
            // scripts/Makefile.lib's size_append: the uncompressed size, little-endian, 32 bits.
            let recorded = reader.u32(start + output.consumed)
            guard recorded == UInt32(truncatingIfNeeded: output.storage.count) else {
                throw .decompression(file: path, format: format.name, offset: UInt64(start + output.consumed),
                                     expected: "a size trailer equal to the decompressed size \(output.storage.count)",
                                     found: "\(recorded)")
            }
        default:
            throw .decompression(file: path, format: format.name, offset: UInt64(start + output.consumed),
                                 expected: "the stream to end at payload_length (or 4 bytes before it)",
                                 found: "\(trailing) bytes left over")
        }
        return Array(output.storage.bytes)
    }

    /// Names the compressors the kernel also offers but Suture does not decode.
    private static func describe(_ payload: UnsafeRawBufferPointer) -> String {
        let b = Array(payload.prefix(4))
        if b.starts(with: Array("BZh".utf8)) { return " (bzip2)" }
        if b.starts(with: [0x5d, 0x00, 0x00]) { return " (lzma)" }
        if b.starts(with: [0x89, 0x4c, 0x5a, 0x4f]) { return " (lzo)" }
        if b.starts(with: [0x02, 0x21, 0x4c, 0x18]) { return " (lz4)" }
        return ""
    }
}

private extension String {
    /// Two decimal digits (boot protocol minor versions print as 2.08).
    init(format2 value: UInt16) {
        self = value < 10 ? "0\(value)" : "\(value)"
    }
}
