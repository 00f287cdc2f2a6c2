/// The whole-process benchmark: the published samples, a bare .NET loop and (optionally) the official Node binding,
/// run interleaved over the same pre-generated streams; medians and ratios printed as a Markdown table.
module ProcessBench.Program

open System
open System.IO
open ProcessBench.Driver
open ProcessBench.Workload

let private median (values: float seq) =
    let sorted = Array.sort (Array.ofSeq values)
    sorted[sorted.Length / 2]

let private argument name fallback (args: string list) =
    match List.skipWhile ((<>) name) args with
    | _ :: value :: _ -> value
    | _ -> fallback

/// Every value given to an option that may be repeated, e.g. each `--local FILE`.
let private repeated name (args: string list) =
    args
    |> List.pairwise
    |> List.choose (fun (option, value) -> if option = name then Some value else None)

/// Extra children given as `--child name=path`.
let private extraChildren (args: string list) =
    repeated "--child" args
    |> List.choose (fun value ->
        match value.Split('=', 2) with
        | [| name; file |] -> Some(name, file)
        | _ -> None)

[<EntryPoint>]
let main argv =
    let args = List.ofArray argv
    let root = argument "--root" (Directory.GetCurrentDirectory()) args
    let runs = int (argument "--runs" "3" args)
    let scale = float (argument "--scale" "1" args)
    let nodeDir = argument "--node" "" args
    // kcl-local builds to run the C# sample under (repeatable, to compare two builds side by side).
    let kclLocals = repeated "--local" args
    // Only what the kcl-local comparison needs: the C# sample, pre-generated and under kcl-local, one workload.
    let localOnly = List.contains "--local-only" args
    // Where the published samples are, under artifacts/: build.fsx's bench target publishes them with the opt-in
    // fast start-up settings into bench/samples; `samples` is where the plain framework-dependent publish goes.
    let samplesDir = argument "--samples" "samples" args
    let count (n: int) = max 1000 (int (float n * scale))
    // Comma-separated names to keep, for quick experiments: `--only-children bare-loop,csharp-consumer`.
    let keep option (name: string) =
        match argument option "" args with
        | "" -> true
        | names -> names.Split ',' |> Array.contains name

    // Both by default: streamed is issue 6's pre-generated stream, lock-step is how the real daemon drives a child.
    let feeds =
        [ LockStep; Streamed ]
        |> List.filter (fun feed -> keep "--only-feeds" feed.Name)

    let published name =
        { Name = name; File = Path.Combine(root, "artifacts", name); Arguments = []; Environment = [] }

    // The same child under one runtime setting, given as a DOTNET_ variable (bench/README.md, "Runtime settings for
    // throughput"): tiered compilation off (no rejitting while a short stream runs, at some cost in start-up), or
    // TieredPGO on or off (the fast publish turns it off, so the C# sample with it on shows what that bought, and the
    // bare loop with it off compares like with like).
    let withSettings suffix settings (child: Child) =
        { child with
            Name = child.Name + suffix
            Environment = settings }

    let withSetting suffix variable value = withSettings suffix [ variable, value ]

    let tieringOff = withSetting ", TC off" "DOTNET_TieredCompilation" "0"
    let tieredPgoOff = withSetting ", TieredPGO off" "DOTNET_TieredPGO" "0"
    let tieredPgoOn = withSetting ", TieredPGO on" "DOTNET_TieredPGO" "1"

    // The runtime reads these variables' numbers as hexadecimal: 0x64 is the default delay of 100 ms, 0x1E the
    // default threshold of 30 calls; 0xA and 0x4000 are the samples' 10 ms and 16,384 calls (samples/KclChild.props).
    let defaultTiering =
        withSettings
            ", default tiering"
            [ "DOTNET_TC_CallCountingDelayMs", "64"; "DOTNET_TC_CallCountThreshold", "1E" ]

    let samplesSettings =
        withSettings
            ", samples' settings"
            [
                "DOTNET_TieredPGO", "0"
                "DOTNET_TC_CallCountingDelayMs", "A"
                "DOTNET_TC_CallCountThreshold", "4000"
            ]

    let children =
        [
            let csharp =
                { published (samplesDir + "/csharp-consumer/csharp-consumer") with Name = "csharp-consumer" }

            let fsharp =
                { published (samplesDir + "/fsharp-consumer/fsharp-consumer") with Name = "fsharp-consumer" }

            let bare = { published "bench/bare-loop/bare-loop" with Name = "bare-loop" }
            csharp

            if not localOnly then
                fsharp
                bare
                tieredPgoOff bare
                samplesSettings bare
                tieredPgoOn csharp
                defaultTiering csharp
                tieringOff csharp
                tieringOff bare
            if nodeDir <> "" && not localOnly then
                {
                    Name = "node (aws-kcl)"
                    File = "node"
                    Arguments = [ Path.Combine(nodeDir, "processor.js") ]
                    Environment = []
                }
            // Extra children for experiments, e.g. a sample published with other runtime settings:
            // `--child tc-off=/path/to/csharp-consumer` (repeatable).
            for name, file in extraChildren args do
                { Name = name; File = file; Arguments = []; Environment = [] }
        ]
        |> List.filter (fun child -> keep "--only-children" child.Name)

    for child in children do
        if Path.IsPathRooted child.File && not (File.Exists child.File) then
            failwithf "%s is missing: run `dotnet fsi build.fsx samples` and publish bench/BareLoop first" child.File

    eprintfn "generating the streams..."

    let workloads =
        [
            create "1 KiB x 500" 1024 500 (count 100_000)
            if not localOnly then
                create "1 KiB x 500 (2x)" 1024 500 (count 200_000)
                create "1 KiB x 10000" 1024 10_000 (count 100_000)
                // The same 100 MB of payload as the first stream: at 200,000 records a run lasted about 0.25 s,
                // mostly the child's warm-up (bench/README.md, "Eighth round").
                create "100 B x 500" 100 500 (count 1_000_000)
        ]
        |> List.filter (fun workload -> keep "--only-workloads" workload.Name)

    // The C# sample under kcl-local, over each workload's records, batch size and record size: run right after the
    // pre-generated runs of that workload, so that each pair sees the same load on the machine. The issue names no
    // workload for this target, and the per-batch hand-offs weigh most where batches are quickest (100 B).
    let localChild = children.Head

    let localRuns =
        [
            for dll in kclLocals do
                for workload in workloads -> (dll, workload), ResizeArray<LocalMeasurement>()
        ]

    let results =
        [
            for run in 1..runs do
                for workload in workloads do
                    for feed in feeds do
                        for child in children do
                            eprintfn "run %d: %s, %s, %s" run child.Name workload.Name feed.Name
                            let measured = Driver.run feed child workload
                            // Each run's figure, so that the spread behind a median can be read from the log.
                            eprintfn
                                "  %.0f records/s, %.2f s CPU, second half %.0f records/s"
                                measured.RecordsPerSecond
                                measured.CpuSeconds
                                measured.SecondHalfRecordsPerSecond
                            measured

                    for (dll, local), measurements in localRuns do
                        if local.Name = workload.Name then
                            eprintfn "run %d: %s under %s, %s" run localChild.Name dll workload.Name

                            let measured =
                                Driver.runLocal dll localChild workload.RecordSize workload.BatchSize workload.Records

                            eprintfn
                                "  %.0f records/s, kcl-local wall %.1f s"
                                measured.RecordsPerSecond
                                measured.WallSeconds
                            measurements.Add measured
        ]

    let summary =
        results
        |> List.groupBy (fun m -> m.Workload, m.Feed, m.Child)
        |> List.map (fun ((workload, feed, child), ms) ->
            (workload, feed, child),
            {|
                RecordsPerSecond = median (ms |> List.map _.RecordsPerSecond)
                SteadyRecordsPerSecond = median (ms |> List.map _.SecondHalfRecordsPerSecond)
                Cpu = median (ms |> List.map _.CpuSeconds)
                Rss = median (ms |> List.map _.PeakRssMiB)
                Startup = median (ms |> List.map _.StartupMs)
                SecondHalfCpuPerRecord =
                    median (ms |> List.map (fun m -> m.SecondHalfCpuSeconds / float m.SecondHalfRecords))
                Records = ms.Head.Records
                Bytes = (workloads |> List.find (fun w -> w.Name = workload)).PayloadBytes
            |})
        |> Map.ofList

    let ratioOf rate workload feed child baseline =
        match Map.tryFind (workload, feed, baseline) summary with
        | Some b -> sprintf "%.2f" (rate summary[workload, feed, child] / rate b)
        | None -> "-"

    let ratio = ratioOf _.RecordsPerSecond

    // The median of each run's own ratio: each child against the baseline run in the same round, between which the
    // machine's speed drifts less than across the whole benchmark (one slow round moves a median of three rates).
    let pairedRatio workload feed child baseline =
        let rates name =
            results
            |> List.filter (fun m -> m.Workload = workload && m.Feed = feed && m.Child = name)
            |> List.map _.RecordsPerSecond

        match rates child, rates baseline with
        | ours, theirs when not ours.IsEmpty && ours.Length = theirs.Length ->
            sprintf "%.2f" (List.map2 (/) ours theirs |> median)
        | _ -> "-"

    // The bare loop run with the child's runtime settings: the samples' publish turns TieredPGO off and sets how
    // tiering starts.
    let sameSettings (child: string) =
        if child.StartsWith "bare-loop" then child
        elif child.EndsWith ", TC off" then "bare-loop, TC off"
        elif child.EndsWith ", default tiering" then "bare-loop, TieredPGO off"
        elif child.EndsWith ", TieredPGO on" || child.StartsWith "node" then "bare-loop"
        else "bare-loop, samples' settings"

    printfn
        "| workload | feed | child | records/s | MB/s | CPU µs/record | peak RSS MiB | spawn→initialize ms | ×bare | ×bare, same settings | ×node | paired ×node | steady records/s | steady ×node |"

    printfn "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

    for workload, feed in List.allPairs workloads feeds do
        for child in children do
            let s = summary[workload.Name, feed, child.Name]

            printfn
                "| %s | %s | %s | %.0f | %.1f | %.2f | %.0f | %.0f | %s | %s | %s | %s | %.0f | %s |"
                workload.Name
                feed.Name
                child.Name
                s.RecordsPerSecond
                (s.RecordsPerSecond * float workload.RecordSize / 1e6)
                (s.Cpu * 1e6 / float s.Records)
                s.Rss
                s.Startup
                (ratio workload.Name feed child.Name "bare-loop")
                (ratio workload.Name feed child.Name (sameSettings child.Name))
                (ratio workload.Name feed child.Name "node (aws-kcl)")
                (pairedRatio workload.Name feed child.Name "node (aws-kcl)")
                s.SteadyRecordsPerSecond
                (ratioOf _.SteadyRecordsPerSecond workload.Name feed child.Name "node (aws-kcl)")

    // Marginal CPU per record: the 2x stream minus the 1x stream, so start-up cancels out (issue 6's measure). Beside
    // it the same within one process, the CPU of the 2x stream's second half (100,000 records), which is free of
    // the difference between two runs' start-ups.
    if not localOnly then
        printfn ""
        printfn "| feed | child | marginal CPU µs/record (200k − 100k) | second half of the 200k stream, CPU µs/record |"
        printfn "|---|---|---:|---:|"

        for feed, child in List.allPairs feeds children do
            match
                Map.tryFind ("1 KiB x 500", feed, child.Name) summary,
                Map.tryFind ("1 KiB x 500 (2x)", feed, child.Name) summary
            with
            | Some one, Some two ->
                printfn
                    "| %s | %s | %.2f | %.2f |"
                    feed.Name
                    child.Name
                    ((two.Cpu - one.Cpu) * 1e6 / float (two.Records - one.Records))
                    (two.SecondHalfCpuPerRecord * 1e6)
            | _ -> ()

    // Issue 6's local daemon target: the C# sample under kcl-local reaches at least 0.70 of its pre-generated rate.
    // kcl-local drives the child lock-step, as the daemon does; beside that, the ratio to the streamed feed.
    if not localRuns.IsEmpty then
        printfn ""
        printfn "| workload | child | kcl-local | against | pre-generated records/s | under kcl-local records/s | ratio | paired ratio | kcl-local wall s |"
        printfn "|---|---|---|---|---:|---:|---:|---:|---:|"

        for ((dll, workload), measurements), feed in List.allPairs localRuns feeds do
            let pregenerated = summary[workload.Name, feed, localChild.Name]
            let local = median (measurements |> Seq.map _.RecordsPerSecond)

            // Each kcl-local run against the pre-generated run of the same round: the load on the machine drifts
            // less within a round than across the whole benchmark.
            let paired =
                results
                |> List.filter (fun m -> m.Workload = workload.Name && m.Feed = feed && m.Child = localChild.Name)
                |> List.map _.RecordsPerSecond
                |> List.zip (List.ofSeq measurements)
                |> List.map (fun (l, p) -> l.RecordsPerSecond / p)
                |> median

            printfn
                "| %s | %s | %s | %s | %.0f | %.0f | %.2f | %.2f | %.1f |"
                workload.Name
                localChild.Name
                (if kclLocals.Length = 1 then "kcl-local" else dll)
                feed.Name
                pregenerated.RecordsPerSecond
                local
                (local / pregenerated.RecordsPerSecond)
                paired
                (median (measurements |> Seq.map _.WallSeconds))

    // Memory for one long line: a full 10 MB GetRecords is about 14 MB of JSON once base64-expanded. Peak RSS with one
    // such batch, less that of an idle child (initialize, then shardEnded), over the line's length.
    if not localOnly && keep "--only-workloads" "one 14 MB line" then
        let idle = create "idle" 1024 1 0
        let long = create "one 14 MB line" 1024 9000 9000
        let lineMiB = float long.Batches[0].Length / 1048576.0

        let peak (child: Child) (workload: Workload) =
            median [ for _ in 1..runs -> (Driver.run LockStep child workload).PeakRssMiB ]

        printfn ""
        printfn "| child | idle peak RSS MiB | with one %.1f MiB line | growth MiB | growth / line |" lineMiB
        printfn "|---|---:|---:|---:|---:|"

        for child in children do
            eprintfn "memory: %s" child.Name
            let idleRss = peak child idle
            let longRss = peak child long

            printfn
                "| %s | %.1f | %.1f | %.1f | %.2f |"
                child.Name
                idleRss
                longRss
                (longRss - idleRss)
                ((longRss - idleRss) / lineMiB)

    // Issue 6's bootstrap target, with the kcl-bootstrap build given (`--bootstrap` the tool's assembly): at least 7
    // runs, since each is short and the machine's speed drifts.
    match argument "--bootstrap" "" args with
    | "" -> ()
    | tool when not localOnly && keep "--only-workloads" "bootstrap" -> Bootstrap.run root tool (max 7 runs)
    | _ -> ()

    0
