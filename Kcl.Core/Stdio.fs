(*
    The real process's standard streams, taken over for the protocol (POLICY.md "stdout" and "Signals").
    stdout is claimed at the file-descriptor level: the protocol keeps a private, close-on-exec duplicate of fd 1, and
    fd 1 itself becomes a copy of stderr. Whatever writes to "stdout" afterwards (Console.Out, a logger built earlier, a
    native library, a process that user code starts) lands on stderr, where the daemon only logs it.
*)
namespace Kcl.Core

open System
open System.Globalization
open System.IO
open System.Runtime.InteropServices
open Microsoft.Win32.SafeHandles

module internal Native =
    [<DllImport("libc", SetLastError = true)>]
    extern int fcntl(int fd, int cmd, int arg)

    [<DllImport("libc", SetLastError = true)>]
    extern int dup2(int oldFd, int newFd)

    [<DllImport("libc", SetLastError = true)>]
    extern int dup3(int oldFd, int newFd, int flags)

    [<DllImport("libc", SetLastError = true)>]
    extern nativeint readlink(string path, byte[] buffer, nativeint size)

    [<DllImport("libc", SetLastError = true)>]
    extern nativeint opendir(string path)

    [<DllImport("libc", SetLastError = true)>]
    extern nativeint readdir(nativeint directory)

    [<DllImport("libc", SetLastError = true)>]
    extern int closedir(nativeint directory)

    [<DllImport("kernel32.dll", SetLastError = true)>]
    extern nativeint GetStdHandle(int which)

    [<DllImport("kernel32.dll", SetLastError = true)>]
    extern bool SetStdHandle(int which, nativeint handle)

    [<DllImport("kernel32.dll", SetLastError = true)>]
    extern nativeint GetCurrentProcess()

    [<DllImport("kernel32.dll", SetLastError = true)>]
    extern bool DuplicateHandle(
        nativeint sourceProcess,
        nativeint source,
        nativeint targetProcess,
        nativeint& target,
        uint32 access,
        bool inheritable,
        uint32 options
    )

/// The protocol's own standard streams, claimed once for the life of the process.
[<Sealed>]
type StandardStreams internal (input: Stream, output: Stream) =
    /// The daemon's messages: the process's stdin.
    member _.Input = input

    /// The protocol channel: a private duplicate of the original stdout.
    member _.Output = output

    /// Told of each SIGINT, SIGTERM and SIGHUP that was ignored; the running interpreter logs them.
    member val OnSignal: PosixSignal -> unit = ignore with get, set

/// Claims the real stdin and stdout for the protocol.
[<RequireQualifiedAccess>]
module Stdio =
    let private fail what =
        let error = Marshal.GetLastPInvokeError()
        raise (IOException(what + " failed (error " + error.ToString(CultureInfo.InvariantCulture) + ")"))

    // The takeover runs before the daemon gets its `initialize` answer, so it stays off the costly first uses:
    // FileInfo.LinkTarget and Directory.GetFiles with Int32.TryParse cost a child about 10 ms more than the calls
    // below, and an F# format string (`$"...{fd}"`) about 20 ms and 3.5 MiB (bench/README.md, "Start-up").

    /// What an open file descriptor refers to, e.g. "pipe:[1234]" as bytes, where /proc tells (Linux).
    let private describeFd (fd: int) =
        let target = Array.zeroCreate<byte> 512
        let path = "/proc/self/fd/" + fd.ToString(CultureInfo.InvariantCulture)
        let length = Native.readlink (path, target, nativeint target.Length)
        if length > 0n && length < nativeint target.Length then Some(Array.sub target 0 (int length)) else None

    /// The open file descriptors, as /proc/self/fd lists them (Linux); empty where there is no /proc.
    let private openFds () =
        // readdir's struct dirent puts the name after d_ino, d_off, d_reclen and d_type: byte 19 on 64-bit Linux,
        // glibc and musl alike. 32-bit layouts differ between the two, so those take the slower, portable way.
        if IntPtr.Size <> 8 then
            try
                Directory.GetFiles "/proc/self/fd"
                |> Array.choose (fun path ->
                    match Int32.TryParse(Path.GetFileName path, NumberStyles.None, CultureInfo.InvariantCulture) with
                    | true, fd -> Some fd
                    | _ -> None)
            with _ ->
                [||]
        else
            let directory = Native.opendir "/proc/self/fd"

            if directory = 0n then
                [||]
            else
                let fds = ResizeArray<int>()
                let mutable entry = Native.readdir directory

                while entry <> 0n do
                    let mutable name = entry + 19n
                    let mutable fd = 0
                    let mutable digits = 0
                    let mutable b = Marshal.ReadByte name

                    while b >= '0'B && b <= '9'B do
                        fd <- fd * 10 + int (b - '0'B)
                        digits <- digits + 1
                        name <- name + 1n
                        b <- Marshal.ReadByte name

                    // "." and ".." have no digits.
                    if digits > 0 && b = 0uy then fds.Add fd
                    entry <- Native.readdir directory

                Native.closedir directory |> ignore
                fds.ToArray()

    /// Points every other descriptor open on the original stdout at stderr. .NET's Console.Out keeps a duplicate of
    /// fd 1 of its own, so a writer or console logger built before the takeover would otherwise still reach the daemon.
    let private redirectDuplicates (original: byte[]) (keep: int) =
        let closeOnExec = 0x80000

        for fd in openFds () do
            if fd > 2 && fd <> keep then
                match describeFd fd with
                | Some target when target.AsSpan().SequenceEqual(ReadOnlySpan original) ->
                    if Native.dup3 (2, fd, closeOnExec) < 0 then
                        fail ("dup3(2, " + fd.ToString(CultureInfo.InvariantCulture) + ")")
                | _ -> ()

    let private claimUnixStdout () =
        let original = describeFd 1
        // F_DUPFD_CLOEXEC: the duplicate must not leak into processes that user code starts, or the daemon, which
        // drains our stdout until EOF when the shard ends, would wait for them too.
        let dupCloexec = if OperatingSystem.IsMacOS() || OperatingSystem.IsIOS() then 67 else 1030
        let privateFd = Native.fcntl (1, dupCloexec, 3)
        if privateFd < 0 then fail "fcntl(1, F_DUPFD_CLOEXEC)"
        if Native.dup2 (2, 1) < 0 then fail "dup2(2, 1)"
        // Only Linux has /proc to find them; elsewhere, writers built before the takeover keep the original stdout.
        original |> Option.iter (fun original -> redirectDuplicates original privateFd)
        new FileStream(new SafeFileHandle(nativeint privateFd, true), FileAccess.Write, 1) :> Stream

    // Unverified: no machine here runs Windows.
    let private claimWindowsStdout () =
        let stdOutput, stdError = -11, -12
        let original = Native.GetStdHandle stdOutput
        let mutable privateHandle = 0n
        let sameAccess = 2u
        let self = Native.GetCurrentProcess()

        if not (Native.DuplicateHandle(self, original, self, &privateHandle, 0u, false, sameAccess)) then
            fail "DuplicateHandle(stdout)"

        if not (Native.SetStdHandle(stdOutput, Native.GetStdHandle stdError)) then
            fail "SetStdHandle(stdout, stderr)"

        new FileStream(new SafeFileHandle(privateHandle, true), FileAccess.Write, 1) :> Stream

    let private ignoreSignals (streams: StandardStreams) =
        // Under the daemon, Ctrl-C reaches the whole process group; the daemon, not the child, decides when to stop.
        // The registrations live as long as the process.
        for signal in [ PosixSignal.SIGINT; PosixSignal.SIGTERM; PosixSignal.SIGHUP ] do
            PosixSignalRegistration.Create(
                signal,
                fun context ->
                    context.Cancel <- true
                    streams.OnSignal context.Signal
            )
            |> ignore

    let private gate = obj ()
    let mutable private claimed: StandardStreams option = None

    /// Takes stdout over at the file-descriptor level, points Console.Out at stderr, and ignores SIGINT, SIGTERM and
    /// SIGHUP. The first call does it; later calls return the same streams, so a host may claim stdout early and the
    /// run later. Runs over injected streams never call it.
    let takeOver () =
        lock gate (fun () ->
            match claimed with
            | Some streams -> streams
            | None ->
                let output =
                    if OperatingSystem.IsWindows() then claimWindowsStdout () else claimUnixStdout ()

                Console.SetOut Console.Error

                let input =
                    if OperatingSystem.IsWindows() then
                        Console.OpenStandardInput()
                    else
                        // A FileStream, so the interpreter knows it may block a thread of its own in read(2).
                        new FileStream(new SafeFileHandle(0n, false), FileAccess.Read, 1) :> Stream

                let streams = StandardStreams(input, output)
                ignoreSignals streams
                claimed <- Some streams
                streams)
