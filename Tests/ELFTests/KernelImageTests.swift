import ELF
import Foundation
import Testing
import TestSupport

/// bzImage payload extraction and the three decompressors, against the xz/zstd/gzip tools.
@Suite struct KernelImageTests {
    @Test func debianVmlinuzEqualsTheXZToolsOutput() throws {
        let kernel = try Fixtures.debianKernel()
        let expected = try Data(contentsOf: try Fixtures.debianVmlinux())
        let extracted = try KernelImage.extractVmlinux(fromBzImage: kernel.vmlinuz.path)
        #expect(extracted.count == expected.count)
        #expect(Data(extracted) == expected)
    }

    /// A minimal bzImage-like file: a setup header whose payload fields point at `payload`.
    static func bzImage(payload: [UInt8], setupSectors: UInt8 = 1, payloadOffset: UInt32 = 0x40,
                        version: UInt16 = 0x020f, magic: String = "HdrS", tail: Int = 32) -> [UInt8] {
        let protectedMode = (setupSectors == 0 ? 5 : Int(setupSectors) + 1) * 512
        var image = [UInt8](repeating: 0, count: protectedMode + Int(payloadOffset))
        image[0x1f1] = setupSectors
        image[0x1fe] = 0x55
        image[0x1ff] = 0xaa
        for (i, byte) in magic.utf8.prefix(4).enumerated() { image[0x202 + i] = byte }
        func put32(_ value: UInt32, at offset: Int) {
            for k in 0..<4 { image[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
        }
        image[0x206] = UInt8(version & 0xff)
        image[0x207] = UInt8(version >> 8)
        put32(payloadOffset, at: 0x248)
        put32(UInt32(payload.count), at: 0x24c)
        image += payload
        image += [UInt8](repeating: 0xcc, count: tail)   // the rest of the decompressor stub
        return image
    }

    /// An ELF to compress: gcc's object of the sample fixture.
    static func sampleELF() throws -> [UInt8] {
        let object = try Fixtures.compileFixture("elf_sample.c", flags: ["-O2", "-c"])
        return [UInt8](try Data(contentsOf: object))
    }

    static func compress(_ bytes: [UInt8], with tool: [String]) throws -> [UInt8] {
        let result = try Fixtures.run(tool[0], Array(tool.dropFirst()), input: Data(bytes))
        guard result.status == 0 else { throw Fixtures.Failure("\(tool) failed: \(result.stderr)") }
        return [UInt8](result.stdoutData)
    }

    /// The kernel build's size_append: the uncompressed size, 32-bit little-endian.
    static func sizeTrailer(_ count: Int) -> [UInt8] {
        (0..<4).map { UInt8(truncatingIfNeeded: UInt32(count) >> (8 * $0)) }
    }

    static func write(_ bytes: [UInt8], _ name: String) throws -> String {
        let url = try Fixtures.temporaryFolder("suture-bzimage").appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url.path
    }

    @Test func gzipPayload() throws {
        let elf = try Self.sampleELF()
        let payload = try Self.compress(elf, with: ["gzip", "-c", "-9", "-n"])
        let path = try Self.write(Self.bzImage(payload: payload), "bzImage-gzip")
        let extracted = try KernelImage.extractVmlinux(fromBzImage: path)
        #expect(extracted == elf)
        #expect(try ELFFile(bytes: extracted, name: "vmlinux").header.type == .relocatable)
    }

    @Test func zstdPayloadWithSizeTrailer() throws {
        let elf = try Self.sampleELF()
        let payload = try Self.compress(elf, with: ["zstd", "-c", "-19", "-q"]) + Self.sizeTrailer(elf.count)
        let path = try Self.write(Self.bzImage(payload: payload, setupSectors: 0, payloadOffset: 0x123), "bzImage-zstd")
        #expect(try KernelImage.extractVmlinux(fromBzImage: path) == elf)
    }

    @Test func xzPayloadWithSizeTrailer() throws {
        let elf = try Self.sampleELF()
        let payload = try Self.compress(elf, with: ["xz", "-c", "--check=crc32"]) + Self.sizeTrailer(elf.count)
        let path = try Self.write(Self.bzImage(payload: payload), "bzImage-xz")
        #expect(try KernelImage.extractVmlinux(fromBzImage: path) == elf)
    }

    @Test func badImagesNameTheProblem() throws {
        let elf = try Self.sampleELF()
        let xz = try Self.compress(elf, with: ["xz", "-c", "--check=crc32"])

        func failure(_ image: [UInt8], _ name: String) throws -> String {
            let path = try Self.write(image, name)
            do {
                _ = try KernelImage.extractVmlinux(fromBzImage: path)
                return "no error"
            } catch let error as ELFError {
                #expect(error.file == path)
                return error.description
            }
        }
        let noMagic = try failure(Self.bzImage(payload: xz, magic: "XXXX"), "no-magic")
        #expect(noMagic.contains("setup header magic at offset 0x202") && noMagic.contains("58 58 58 58"))
        let old = try failure(Self.bzImage(payload: xz, version: 0x0206), "old")
        #expect(old.contains("2.06") && old.contains("2.08"))
        let short = try failure(Array(Self.bzImage(payload: xz).prefix(0x240)), "short")
        #expect(short.contains("bzImage setup header at offset 0x0 is truncated"))
        // payload_length beyond the end of the file.
        var long = Self.bzImage(payload: xz, tail: 0)
        long.removeLast(100)
        #expect(try failure(long, "long").contains("bzImage payload"))
        // A payload the tool would not make: bzip2.
        let bzip2 = try failure(Self.bzImage(payload: Array("BZh91AY&SY".utf8) + xz), "bzip2")
        #expect(bzip2.contains("(bzip2)") && bzip2.contains("unsupported"))
        // Corrupt compressed data: a flipped byte in the middle of the xz stream.
        var corrupt = xz + Self.sizeTrailer(elf.count)
        corrupt[corrupt.count / 2] ^= 0x55
        let corrupted = try failure(Self.bzImage(payload: corrupt), "corrupt")
        #expect(corrupted.contains("xz stream at offset 0x"), Comment(rawValue: corrupted))
        // A size trailer that disagrees with the data.
        let wrongSize = try failure(Self.bzImage(payload: xz + Self.sizeTrailer(elf.count + 1)), "wrong-size")
        #expect(wrongSize.contains("size trailer") && wrongSize.contains("\(elf.count + 1)"))
        // Truncated stream.
        let truncated = try failure(Self.bzImage(payload: Array(xz.prefix(xz.count - 40))), "truncated")
        #expect(truncated.contains("xz stream") && truncated.contains("truncated"), Comment(rawValue: truncated))
    }

    @Test(arguments: [["xz", "-c"], ["zstd", "-c", "-q"], ["gzip", "-c", "-n"]])
    func decompressorsInvertTheTools(_ tool: [String]) throws {
        let elf = try Self.sampleELF()
        let compressed = try Self.compress(elf, with: tool)
        let decode: ([UInt8]) throws -> [UInt8] = switch tool[0] {
        case "xz": { try Decompressor.xz($0) }
        case "zstd": { try Decompressor.zstd($0) }
        default: { try Decompressor.gzip($0) }
        }
        #expect(try decode(compressed) == elf)
        #expect(try decode(Array(compressed[...])) == elf)   // any collection
        #expect(try ELFFile(bytes: compressed, name: "sample.o." + tool[0]).contents.bytes == elf)
        // Concatenated streams decode to the concatenation, as the tools do.
        #expect(try decode(compressed + compressed) == elf + elf)
        // Truncation and garbage are errors, never crashes.
        for cut in [1, 7, compressed.count / 2, compressed.count - 1] {
            #expect(throws: ELFError.self) { try decode(Array(compressed.prefix(cut))) }
        }
        #expect(throws: ELFError.self) { try decode(compressed + [1, 2, 3, 4, 5, 6, 7, 8]) }
        #expect(throws: ELFError.self) { try decode([]) }
    }
}
