// swift-tools-version:6.0
import PackageDescription

// Suture: live machine-code patching for Linux kernels and processes.
// Dependencies point one way: suture → Lab → Patching → Targets, Disassembly, Symbols → ELF.
let package = Package(
    name: "Suture",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "suture", targets: ["suture"]),
        .library(name: "SutureKit", targets: ["ELF", "Symbols", "Disassembly", "Targets", "Patching", "Lab"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries from Debian's -dev packages (libcapstone-dev, liblzma-dev, libzstd-dev, zlib1g-dev).
        .systemLibrary(name: "CCapstone", pkgConfig: "capstone",
                       providers: [.apt(["libcapstone-dev"])]),
        .systemLibrary(name: "CLZMA", pkgConfig: "liblzma", providers: [.apt(["liblzma-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // What Swift cannot import directly: variadic ptrace, ioctl, and a few macros.
        .target(name: "CShim"),

        .target(name: "ELF", dependencies: ["CLZMA", "CZstd", "CZlib"]),
        .target(name: "Symbols", dependencies: ["ELF"]),
        .target(name: "Disassembly", dependencies: ["ELF", "CCapstone"]),
        .target(name: "Targets", dependencies: ["ELF", "Symbols", "CShim"]),
        .target(name: "Patching", dependencies: ["ELF", "Symbols", "Disassembly", "Targets"]),
        .target(name: "Lab", dependencies: ["ELF", "Symbols", "Disassembly", "Targets", "Patching"]),
        .executableTarget(name: "suture", dependencies: [
            "ELF", "Symbols", "Disassembly", "Targets", "Patching", "Lab",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Shared by the test targets: fixtures built or fetched at test time (gcc, Debian's archive).
        .target(name: "TestSupport", dependencies: ["ELF"], path: "Tests/TestSupport"),
        .testTarget(name: "ELFTests", dependencies: ["ELF", "TestSupport"]),
        .testTarget(name: "SymbolsTests", dependencies: ["Symbols", "TestSupport"]),
        .testTarget(name: "DisassemblyTests", dependencies: ["Disassembly", "TestSupport"]),
        .testTarget(name: "TargetsTests", dependencies: ["Targets", "Lab", "TestSupport"]),
        .testTarget(name: "PatchingTests", dependencies: ["Patching", "Targets", "Symbols", "Disassembly", "TestSupport"]),
        .testTarget(name: "LabTests", dependencies: ["Lab", "TestSupport"]),
        .testTarget(name: "SutureEndToEndTests", dependencies: ["TestSupport"]),
    ]
)
