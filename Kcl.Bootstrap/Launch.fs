(*
    Launch --- running the daemon so that signals reach it, its exit code comes back, and no JVM outlives us.

    On Unix the bootstrap replaces itself with java (execve): the JVM then has the bootstrap's pid, its parent and
    its process group, so SIGTERM, SIGINT and SIGKILL hit the JVM itself and the exit code is the JVM's. Elsewhere the
    JVM is a child in a Job Object that kills it when the bootstrap's handle closes, and the bootstrap waits for it.
*)
namespace Kcl.Bootstrap

open System
open System.Collections
open System.Diagnostics
open System.Runtime.InteropServices

module private Native =
    [<DllImport("libc", SetLastError = true)>]
    extern int execve(string path, string[] argv, string[] envp)

    [<DllImport("kernel32.dll", SetLastError = true, CharSet = CharSet.Unicode)>]
    extern nativeint CreateJobObjectW(nativeint attributes, string name)

    [<DllImport("kernel32.dll", SetLastError = true)>]
    extern bool SetInformationJobObject(nativeint job, int infoClass, nativeint info, uint32 length)

    [<DllImport("kernel32.dll", SetLastError = true)>]
    extern bool AssignProcessToJobObject(nativeint job, nativeint proc)

/// Starting the daemon.
[<RequireQualifiedAccess>]
module Launch =
    /// A ProcessStartInfo with each argument in ArgumentList, so paths with spaces arrive intact.
    let startInfo (command: Command) =
        let info = ProcessStartInfo(command.Program, UseShellExecute = false)

        for a in command.Arguments do
            info.ArgumentList.Add a

        info

    // JobObjectExtendedLimitInformation = 9; JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000. The structure is 144 bytes
    // on 64-bit Windows, and LimitFlags sits at offset 16 of it.
    let private killOnCloseJob () =
        let job = Native.CreateJobObjectW(0n, null)
        let size = 144
        let info = Marshal.AllocHGlobal size

        try
            for i in 0 .. size - 1 do
                Marshal.WriteByte(info, i, 0uy)

            Marshal.WriteInt32(info, 16, 0x2000)
            Native.SetInformationJobObject(job, 9, info, uint32 size) |> ignore
            job
        finally
            Marshal.FreeHGlobal info

    /// Runs the command as a child and returns its exit code (the path for Windows, where there is no execve).
    /// Ctrl-C and close events are not acted on by the bootstrap: the console delivers them to the child too, which
    /// shuts down gracefully; a Job Object kills the child if the bootstrap dies first.
    let runChild (command: Command) : int =
        let handlers =
            [ PosixSignal.SIGINT; PosixSignal.SIGTERM; PosixSignal.SIGQUIT ]
            |> List.map (fun s -> PosixSignalRegistration.Create(s, fun context -> context.Cancel <- true))

        try
            use child = Process.Start(startInfo command)

            if OperatingSystem.IsWindows() then
                Native.AssignProcessToJobObject(killOnCloseJob (), child.Handle) |> ignore

            child.WaitForExit()
            child.ExitCode
        finally
            for h in handlers do
                h.Dispose()

    /// Replaces this process with the command (Unix only). Returns only on failure, with the reason.
    let exec (command: Command) : string =
        Console.Out.Flush()
        Console.Error.Flush()

        let environment =
            [|
                for e in Environment.GetEnvironmentVariables() |> Seq.cast<DictionaryEntry> do
                    sprintf "%O=%O" e.Key e.Value
                null
            |]

        let argv =
            Array.append (Array.ofList (command.Program :: command.Arguments)) [| null |]

        Native.execve (command.Program, argv, environment) |> ignore
        sprintf "cannot execute %s: %s" command.Program (Marshal.GetLastPInvokeErrorMessage())

    /// Runs the daemon: execve on Unix (returns only on failure), a tied child elsewhere; the exit code or an error.
    let execute (command: Command) : Result<int, string> =
        if OperatingSystem.IsWindows() then
            Ok(runChild command)
        else
            Error(exec command)
