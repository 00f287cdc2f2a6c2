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

[<EntryPoint>]
let main argv =
    let args = List.ofArray argv
    let root = argument "--root" (Directory.GetCurrentDirectory()) args
    let runs = int (argument "--runs" "3" args)
    let scale = float (argument "--scale" "1" args)
    let nodeDir = argument "--node" "" args
    // Where the published samples are, under artifacts/: build.fsx's bench target publishes them with the opt-in
    // fast start-up settings into bench/samples; `samples` is where the plain framework-dependent publish goes.
    let samplesDir = argument "--samples" "samples" args
    let count (n: int) = max 1000 (int (float n * scale))

    let published name =
        { Name = name; File = Path.Combine(root, "artifacts", name); Arguments = [] }

    let children =
        [
            { published (samplesDir + "/csharp-consumer/csharp-consumer") with Name = "csharp-consumer" }
            { published (samplesDir + "/fsharp-consumer/fsharp-consumer") with Name = "fsharp-consumer" }
            { published "bench/bare-loop/bare-loop" with Name = "bare-loop" }
            if nodeDir <> "" then
                { Name = "node (aws-kcl)"; File = "node"; Arguments = [ Path.Combine(nodeDir, "processor.js") ] }
        ]

    for child in children do
        if Path.IsPathRooted child.File && not (File.Exists child.File) then
            failwithf "%s is missing: run `dotnet fsi build.fsx samples` and publish bench/BareLoop first" child.File

    eprintfn "generating the streams..."

    let workloads =
        [
            create "1 KiB x 500" 1024 500 (count 100_000)
            create "1 KiB x 500 (2x)" 1024 500 (count 200_000)
            create "1 KiB x 10000" 1024 10_000 (count 100_000)
            create "100 B x 500" 100 500 (count 200_000)
        ]

    let results =
        [
            for run in 1..runs do
                for workload in workloads do
                    for child in children do
                        eprintfn "run %d: %s, %s" run child.Name workload.Name
                        Driver.run child workload
        ]

    let summary =
        results
        |> List.groupBy (fun m -> m.Workload, m.Child)
        |> List.map (fun ((workload, child), ms) ->
            (workload, child),
            {|
                RecordsPerSecond = median (ms |> List.map _.RecordsPerSecond)
                Cpu = median (ms |> List.map _.CpuSeconds)
                Rss = median (ms |> List.map _.PeakRssMiB)
                Startup = median (ms |> List.map _.StartupMs)
                Records = ms.Head.Records
                Bytes = (workloads |> List.find (fun w -> w.Name = workload)).PayloadBytes
            |})
        |> Map.ofList

    let ratio workload child baseline =
        match Map.tryFind (workload, baseline) summary with
        | Some b -> sprintf "%.2f" (summary[workload, child].RecordsPerSecond / b.RecordsPerSecond)
        | None -> "-"

    printfn "| workload | child | records/s | MB/s | CPU µs/record | peak RSS MiB | spawn→initialize ms | ×bare | ×node |"
    printfn "|---|---|---:|---:|---:|---:|---:|---:|---:|"

    for workload in workloads do
        for child in children do
            let s = summary[workload.Name, child.Name]

            printfn
                "| %s | %s | %.0f | %.1f | %.2f | %.0f | %.0f | %s | %s |"
                workload.Name
                child.Name
                s.RecordsPerSecond
                (s.RecordsPerSecond * float workload.RecordSize / 1e6)
                (s.Cpu * 1e6 / float s.Records)
                s.Rss
                s.Startup
                (ratio workload.Name child.Name "bare-loop")
                (ratio workload.Name child.Name "node (aws-kcl)")

    // Marginal CPU per record: the 2x stream minus the 1x stream, so start-up cancels out.
    printfn ""
    printfn "| child | marginal CPU µs/record (200k − 100k) |"
    printfn "|---|---:|"

    for child in children do
        let one = summary["1 KiB x 500", child.Name]
        let two = summary["1 KiB x 500 (2x)", child.Name]
        printfn "| %s | %.2f |" child.Name ((two.Cpu - one.Cpu) * 1e6 / float (two.Records - one.Records))

    0
