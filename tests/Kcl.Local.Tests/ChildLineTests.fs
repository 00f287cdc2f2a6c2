/// How kcl-local reads a child's stdout, over a real pipe: lines split as the daemon's `BufferedReader.readLine` splits
/// them, whether a read is watched for or waited for; and its stderr, read at a pace.
module Kcl.Local.Tests.ChildLineTests

open System
open System.IO
open System.IO.Pipes
open System.Text
open System.Threading
open FsCheck
open FsCheck.FSharp
open Kcl.Local
open Xunit

/// A pipe whose reading end is watched, as a child's stdout is.
let private pipe () =
    let writer = new AnonymousPipeServerStream(PipeDirection.Out)
    let reading = new AnonymousPipeClientStream(PipeDirection.In, writer.ClientSafePipeHandle)
    writer, new WatchedPipe(reading)

/// The lines `StreamReader.ReadLine` finds in the bytes: the reference, which splits as `BufferedReader.readLine` does.
let private referenceLines (bytes: byte[]) =
    use reader = new StreamReader(new MemoryStream(bytes), UTF8Encoding(false), false)

    [
        let mutable line = reader.ReadLine()

        while not (isNull line) do
            yield line
            line <- reader.ReadLine()
    ]

let private readLine (reader: ChildLineReader) =
    reader.ReadAsync(TimeSpan.FromSeconds 10.0, CancellationToken.None).Result

let private readAll (reader: ChildLineReader) =
    [
        let mutable reading = true

        while reading do
            match readLine reader with
            | Some null -> reading <- false
            | Some line -> yield line
            | None -> failwith "no line within 10 s"
    ]

// The bytes that matter to a line reader: both line ends and their pair, a BOM, multi-byte characters, and bytes that
// are not UTF-8 (a lone continuation byte, a sequence cut short by a line end).
let private piece =
    Gen.oneof
        [
            Gen.elements [ "a"; "{\"action\":\"status\"}"; "\r"; "\n"; "\r\n"; "\uFEFF"; "é"; "日本"; "🙂" ]
            |> Gen.map Encoding.UTF8.GetBytes
            Gen.elements [ [| 0x80uy |]; [| 0xE2uy; 0x82uy |]; [| 0xFFuy |] ]
        ]

// Bytes, and where the writer's writes end, so that lines and line ends straddle reads; with pauses between writes,
// some reads are watched for and some waited for.
let private writes =
    gen {
        let! bytes = Gen.listOf piece |> Gen.map Array.concat
        let! cuts = Gen.listOf (Gen.choose (0, bytes.Length)) |> Gen.map (List.distinct >> List.sort)
        let! pause = Gen.elements [ 0; 0; 1; 5 ]
        return bytes, cuts, pause
    }

[<Fact>]
let ``Lines over a pipe split and decode as BufferedReader.readLine does, however the writes fall`` () =
    let check (bytes: byte[], cuts: int list, pause: int) =
        let writer, reading = pipe ()
        use writer = writer
        let reader = ChildLineReader reading

        let writing =
            Tasks.Task.Run(fun () ->
                let mutable from = 0

                for cut in cuts @ [ bytes.Length ] do
                    writer.Write(bytes, from, cut - from)
                    writer.Flush()
                    from <- cut
                    Thread.Sleep pause

                writer.Dispose())

        let lines = readAll reader
        writing.Wait()
        lines = referenceLines bytes

    Check.One(Config.QuickThrowOnFailure.WithMaxTest 100, Prop.forAll (Arb.fromGen writes) check)

[<Fact>]
let ``A line the child has not written is not waited for, and one it has written is taken`` () =
    let writer, reading = pipe ()
    use writer = writer
    let reader = ChildLineReader reading
    let clock = Diagnostics.Stopwatch.StartNew()
    Assert.Equal(None, reader.TryReadWritten())
    Assert.True(clock.Elapsed < TimeSpan.FromMilliseconds 500.0, sprintf "took %O" clock.Elapsed)

    writer.Write(Encoding.UTF8.GetBytes "late\r")
    writer.Flush()
    Thread.Sleep 50
    Assert.Equal(Some "late", reader.TryReadWritten())

    // The "\n" after that "\r" belongs to it: no empty line comes of it.
    writer.Write(Encoding.UTF8.GetBytes "\nnext\n")
    writer.Dispose()
    Assert.Equal(Some "next", readLine reader)
    // The end of input is left for ReadAsync.
    Assert.Equal(None, reader.TryReadWritten())
    Assert.Equal(Some null, readLine reader)

[<Fact>]
let ``A read that outlives its bound gives up, and the line that comes later is read next`` () =
    let writer, reading = pipe ()
    use writer = writer
    let reader = ChildLineReader reading
    Assert.Equal(None, reader.ReadAsync(TimeSpan.FromMilliseconds 20.0, CancellationToken.None).Result)

    writer.Write(Encoding.UTF8.GetBytes "{\"action\":\"status\"}\n")
    writer.Flush()
    Assert.Equal(Some "{\"action\":\"status\"}", readLine reader)

[<Fact>]
let ``A cancelled read gives up at once`` () =
    let writer, reading = pipe ()
    use writer = writer
    let reader = ChildLineReader reading
    use cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds 20.0)
    Assert.Equal(None, reader.ReadAsync(TimeSpan.FromMinutes 1.0, cancel.Token).Result)

[<Fact>]
let ``A line longer than the buffer is read whole`` () =
    let writer, reading = pipe ()
    use writer = writer
    let reader = ChildLineReader reading
    let long = String('x', 300_000)

    let writing =
        Tasks.Task.Run(fun () ->
            writer.Write(Encoding.UTF8.GetBytes(long + "\nshort"))
            writer.Dispose())

    Assert.Equal<string list>([ long; "short" ], readAll reader)
    writing.Wait()

/// The descriptors that an epoll instance of this process watches, as Linux lists them under /proc.
let private watchedByEpoll () =
    [
        for info in Directory.GetFiles "/proc/self/fdinfo" do
            let lines =
                try
                    File.ReadAllLines info
                with
                | :? IOException
                | :? UnauthorizedAccessException -> [||]

            for line in lines do
                if line.StartsWith "tfd:" then
                    yield int (line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1])
    ]

[<Fact>]
let ``A read that waits for the child leaves its pipe out of the runtime's socket engine`` () =
    if OperatingSystem.IsLinux() then
        use writer = new AnonymousPipeServerStream(PipeDirection.Out)
        let client = new AnonymousPipeClientStream(PipeDirection.In, writer.ClientSafePipeHandle)
        use reading = new WatchedPipe(client)
        let fd = int (client.SafePipeHandle.DangerousGetHandle())
        let reader = ChildLineReader reading

        // Written only after the watch has given up, so the read waits.
        let writing =
            Tasks.Task.Run(fun () ->
                Thread.Sleep 100
                writer.Write(Encoding.UTF8.GetBytes "{\"action\":\"status\"}\n")
                writer.Flush())

        Assert.Equal(Some "{\"action\":\"status\"}", readLine reader)
        writing.Wait()
        Assert.DoesNotContain(fd, watchedByEpoll ())

[<Fact>]
let ``A child's stderr is read at once when it was quiet, and after a pause when it has just written`` () =
    use writer = new AnonymousPipeServerStream(PipeDirection.Out)
    let client = new AnonymousPipeClientStream(PipeDirection.In, writer.ClientSafePipeHandle)
    let pause = TimeSpan.FromMilliseconds 500.0
    use reader = new StreamReader(new PacedReads(client, pause))

    let write (text: string) =
        writer.Write(Encoding.UTF8.GetBytes text)
        writer.Flush()

    write "first\n"
    let clock = Diagnostics.Stopwatch.StartNew()
    Assert.Equal("first", reader.ReadLine())
    Assert.True(clock.Elapsed < pause, sprintf "the first line took %O" clock.Elapsed)

    // Both written before the read after "first", which waits out the pause and then takes them together.
    write "second\nthird\n"
    clock.Restart()
    Assert.Equal("second", reader.ReadLine())
    let waited = clock.Elapsed
    Assert.True(waited >= pause - TimeSpan.FromMilliseconds 20.0, sprintf "the second line took %O" waited)
    Assert.Equal("third", reader.ReadLine())

    writer.Dispose()
    Assert.Null(reader.ReadLine())

[<Fact>]
let ``A child started apart runs off its shard's CPU, and the starting thread then runs on that CPU alone`` () =
    let cpus = CpuMask.get 0

    // Only Linux can say, and a machine of one CPU has nothing to set apart.
    if cpus.Length >= 2 then
        let outcome =
            Tasks.TaskCompletionSource<int * int[] * int[]>(Tasks.TaskCreationOptions.RunContinuationsAsynchronously)

        // A thread of its own, since the test's would stay confined.
        let work () =
            try
                let plan = CpuPlan cpus
                let own = (plan.TryReserve()).Value

                let child =
                    plan.StartOnOthers(
                        own,
                        fun () ->
                            let info = Diagnostics.ProcessStartInfo("cat", "/proc/self/status")
                            info.RedirectStandardOutput <- true
                            Diagnostics.Process.Start info
                    )

                let status = child.StandardOutput.ReadToEnd()
                child.WaitForExit()

                let allowed =
                    status.Split('\n')
                    |> Array.find (fun line -> line.StartsWith "Cpus_allowed_list:")
                    |> fun line -> line.Substring(line.IndexOf ':' + 1).Trim()
                    |> fun list ->
                        [| for part in list.Split ',' do
                               match part.Split '-' with
                               | [| one |] -> int one
                               | [| first; last |] -> yield! [ int first .. int last ]
                               | _ -> failwithf "unexpected CPU list %s" list |]

                outcome.SetResult((own, allowed, CpuMask.get 0))
            with e ->
                outcome.SetException e

        Threading.Thread(work).Start()
        let own, childCpus, threadCpus = outcome.Task.Result
        Assert.Equal<int[]>(cpus |> Array.filter ((<>) own), childCpus)
        Assert.Equal<int[]>([| own |], threadCpus)

/// Reads the pipe slowly, on a thread of its own, until `length` bytes have come: small reads, with a pause every
/// 256 KiB, so that a splice keeps finding the pipe full. Not on the thread pool: a pool reader can start later than
/// the splice waits when other tests hold the pool's threads.
let private slowReader (client: Stream) (length: int) =
    let received = Tasks.TaskCompletionSource<byte[]>()
    let reading = new ManualResetEventSlim()

    let read () =
        try
            let got = new MemoryStream()
            let buffer = Array.zeroCreate<byte> 8192
            reading.Set()
            let mutable n = client.Read(buffer, 0, buffer.Length)

            while n > 0 do
                got.Write(buffer, 0, n)

                if got.Length % (256L * 1024L) < 8192L then
                    Thread.Sleep 2

                n <- if got.Length = int64 length then 0 else client.Read(buffer, 0, buffer.Length)

            received.SetResult(got.ToArray())
        with e ->
            received.SetException e

    Thread(read, IsBackground = true).Start()
    reading.Wait()
    received.Task

let private randomLine (length: int) =
    let line = GC.AllocateUninitializedArray<byte>(length, pinned = true)
    Random(17).NextBytes line
    line

[<Fact>]
let ``A batch larger than the pipe is spliced whole while the child reads, byte for byte`` () =
    if OperatingSystem.IsLinux() then
        use server = new AnonymousPipeServerStream(PipeDirection.Out)

        use client = new AnonymousPipeClientStream(PipeDirection.In, server.ClientSafePipeHandle)
        let line = randomLine (3 * 1024 * 1024 + 5)
        let received = slowReader client line.Length
        let put = ChildProcess.splice server (ArraySegment line) (fun () -> false)
        Assert.Equal(line.Length, put)
        Assert.Equal<byte[]>(line, received.Result)

[<Fact>]
let ``While the pipe is full, the splice does the caller's work a piece at a time, and the line still arrives whole``
    ()
    =
    if OperatingSystem.IsLinux() then
        use server = new AnonymousPipeServerStream(PipeDirection.Out)

        use client = new AnonymousPipeClientStream(PipeDirection.In, server.ClientSafePipeHandle)
        let line = randomLine (3 * 1024 * 1024 + 5)
        let received = slowReader client line.Length
        // Forty pieces of work, each shorter than the reader's pauses, then none: the splice then waits for room.
        let mutable pieces = 0
        let mutable askedAfter = 0

        let whileFull () =
            if pieces < 40 then
                Thread.SpinWait 1000
                pieces <- pieces + 1
                true
            else
                askedAfter <- askedAfter + 1
                false

        let put = ChildProcess.splice server (ArraySegment line) whileFull
        Assert.Equal(line.Length, put)
        Assert.Equal<byte[]>(line, received.Result)
        Assert.Equal(40, pieces)
        // Each wait for room asks first whether any work is left.
        Assert.True(askedAfter > 0, "the splice never waited once the work was done")

[<Fact>]
let ``A splice into a pipe nobody reads gives up after a short wait, and one into a closed pipe at once`` () =
    if OperatingSystem.IsLinux() then
        use server = new AnonymousPipeServerStream(PipeDirection.Out)
        let client = new AnonymousPipeClientStream(PipeDirection.In, server.ClientSafePipeHandle)
        let line = GC.AllocateUninitializedArray<byte>(4 * 1024 * 1024, pinned = true)
        let clock = Diagnostics.Stopwatch.StartNew()
        let put = ChildProcess.splice server (ArraySegment line) (fun () -> false)
        // What the pipe held, and no more: the rest is the caller's, to write while it watches for the child's lines.
        Assert.InRange(put, 1, line.Length - 1)
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds 5.0, sprintf "the splice waited %O" clock.Elapsed)
        client.Dispose()
        Assert.Equal(0, ChildProcess.splice server (ArraySegment(line, put, line.Length - put)) (fun () -> false))
