import Foundation
import Testing
import TestSupport
import CShim
@testable import Targets

/// The host side of /dev/suture: the ABI as Swift imports it must match what gcc (which builds the
/// module) lays out, and a missing device must say how to get one. The ioctls themselves run in
/// the lab (LabTests/KmodTests), against the real module.
struct LocalKernelTargetTests {
    @Test("the ioctl structs and numbers Swift imports match gcc's layout of the same header")
    func abiMatchesGCC() throws {
        let folder = try Fixtures.temporaryFolder("suture-kmod-abi")
        defer { try? FileManager.default.removeItem(at: folder) }
        let header = Fixtures.repoRoot.appendingPathComponent("Sources/CShim/include").path
        let program = try Fixtures.compileC("""
            #include <stddef.h>
            #include <stdio.h>
            #include "suture_kmod.h"
            int main(void) {
                printf("%zu %zu %zu %zu\\n", sizeof(struct suture_kmod_read), offsetof(struct suture_kmod_read, length),
                       offsetof(struct suture_kmod_read, message), sizeof(struct suture_kmod_cas));
                printf("%zu %zu %zu %zu %zu %zu\\n", offsetof(struct suture_kmod_cas, found),
                       offsetof(struct suture_kmod_cas, stop_machine_ns), offsetof(struct suture_kmod_cas, busy_address),
                       offsetof(struct suture_kmod_cas, message), offsetof(struct suture_kmod_cas, tasks_vouched),
                       offsetof(struct suture_kmod_cas, busy_pid));
                printf("%lx %lx %lx\\n", (unsigned long)SUTURE_IOC_VERSION, (unsigned long)SUTURE_IOC_READ,
                       (unsigned long)SUTURE_IOC_CAS);
                return 0;
            }
            """, name: "abi", flags: ["-O0", "-I", header], in: folder)
        let gcc = try Fixtures.check(program.path, [])

        typealias Read = suture_kmod_read
        typealias CAS = suture_kmod_cas
        let swift = """
            \(MemoryLayout<Read>.size) \(MemoryLayout<Read>.offset(of: \Read.length)!) \(MemoryLayout<Read>.offset(of: \Read.message)!) \(MemoryLayout<CAS>.size)
            \(MemoryLayout<CAS>.offset(of: \CAS.found)!) \(MemoryLayout<CAS>.offset(of: \CAS.stop_machine_ns)!) \(MemoryLayout<CAS>.offset(of: \CAS.busy_address)!) \(MemoryLayout<CAS>.offset(of: \CAS.message)!) \(MemoryLayout<CAS>.offset(of: \CAS.tasks_vouched)!) \(MemoryLayout<CAS>.offset(of: \CAS.busy_pid)!)
            \(String(suture_kmod_ioc_version(), radix: 16)) \(String(suture_kmod_ioc_read(), radix: 16)) \(String(suture_kmod_ioc_cas(), radix: 16))

            """
        #expect(swift == gcc)
    }

    @Test("without the module: the error names the device and `suture kmod load`")
    func missingDevice() throws {
        let path = "/tmp/suture-no-such-device-\(getpid())"
        do {
            _ = try LocalKernelTarget(devicePath: path)
            Issue.record("opened \(path)")
        } catch {
            let text = "\(error)"
            #expect(text.contains(path) && text.contains("suture kmod load"), "\(text)")
        }
    }

    @Test("a device that is not /dev/suture is refused by the ABI version check")
    func wrongDevice() throws {
        do {
            _ = try LocalKernelTarget(devicePath: "/dev/null")
            Issue.record("/dev/null accepted as /dev/suture")
        } catch {
            let text = "\(error)"
            #expect(text.contains("SUTURE_IOC_VERSION") && text.contains("ABI 1"), "\(text)")
        }
    }
}
