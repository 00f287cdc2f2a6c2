module Kcl.Bench.Program

open BenchmarkDotNet.Running

[<EntryPoint>]
let main argv =
    BenchmarkSwitcher.FromAssembly(typeof<CodecBenchmarks.Decode>.Assembly).Run(argv) |> ignore
    0
