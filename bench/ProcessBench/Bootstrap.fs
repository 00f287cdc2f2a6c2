/// Issue 6's bootstrap target: kcl-bootstrap with a warm cache verifies the 79 jars of KCL 3.1.3 and prints the
/// daemon's command within a second. The real jars cannot be fetched here (no Maven Central), so a Maven-layout folder
/// of generated jars stands in: the release's coordinates, about as many classes and bytes as the real classpath.
module ProcessBench.Bootstrap

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Security.Cryptography

// What the generated repository holds: about 30,000 classes in all, spread evenly (the real 79 jars hold about that
// many), each 3,400 bytes of text from 16 letters, which deflates to about half, so the jars come to about 58 MB.
let private classCount = 30_000
let private classBytes = 3_400

// A class file's header (magic, minor 0, major 52: Java 8, as most of the real jars), then filler from 16 letters.
let private classFile (random: Random) =
    let bytes = Array.zeroCreate<byte> classBytes
    [| 0xCAuy; 0xFEuy; 0xBAuy; 0xBEuy; 0uy; 0uy; 0uy; 52uy |].CopyTo(bytes, 0)

    for i in 8 .. bytes.Length - 1 do
        bytes[i] <- byte 'a' + byte (random.Next 16)

    bytes

/// Writes the release's jars, each with its `.sha1`, into `repository` in Maven's layout; returns the total bytes.
let private generate (coordinates: string[]) (repository: string) =
    let random = Random 6
    let perJar = classCount / coordinates.Length

    coordinates
    |> Array.sumBy (fun coordinate ->
        let group, artifact, version =
            match coordinate.Split ':' with
            | [| g; a; v |] -> g, a, v
            | _ -> failwithf "not group:artifact:version: %s" coordinate

        let name = sprintf "%s-%s.jar" artifact version
        let folder = Path.Combine(repository, group.Replace('.', '/'), artifact, version)
        Directory.CreateDirectory folder |> ignore
        let path = Path.Combine(folder, name)

        do
            use zip = ZipFile.Open(path, ZipArchiveMode.Create)

            for i in 1..perJar do
                let entry =
                    zip.CreateEntry(sprintf "%s/%s/C%d.class" (group.Replace('.', '/')) artifact i)

                use stream = entry.Open()
                stream.Write(classFile random)

        let jar = File.ReadAllBytes path
        File.WriteAllText(path + ".sha1", Convert.ToHexStringLower(SHA1.HashData jar) + "  " + name + "\n")
        int64 jar.Length)

/// Runs the tool once and returns its wall time; fails, naming the arguments, if it exits with another code than 0.
let private timed (tool: string) (args: string list) =
    let info = ProcessStartInfo("dotnet", tool :: args)
    info.RedirectStandardOutput <- true
    info.RedirectStandardError <- true
    let clock = Stopwatch.StartNew()
    use proc = Process.Start info
    let errors = proc.StandardError.ReadToEndAsync()
    proc.StandardOutput.ReadToEnd() |> ignore
    proc.WaitForExit()
    let seconds = clock.Elapsed.TotalSeconds

    if proc.ExitCode <> 0 then
        failwithf "kcl-bootstrap %s exited with %d: %s" (String.Join(" ", args)) proc.ExitCode errors.Result

    seconds

/// Generates the repository, fetches it cold into a new cache, then times `runs` warm runs of each kind, interleaved,
/// and prints a Markdown table of the medians.
let run (root: string) (tool: string) (runs: int) =
    let dir = Directory.CreateTempSubdirectory "kcl-bench-bootstrap-"

    try
        let repository = Path.Combine(dir.FullName, "repository")
        let cache = Path.Combine(dir.FullName, "cache")

        let coordinates =
            File.ReadAllLines(Path.Combine(root, "Kcl.Bootstrap", "releases", "3.1.3.txt"))

        let coordinates =
            coordinates
            |> Array.filter (fun line -> line.Trim() <> "" && not (line.StartsWith "#"))

        let bytes = generate coordinates repository
        let source = [ "--maven-repo"; repository; "--jar-path"; cache ]
        let properties = Path.Combine(root, "samples", "csharp-consumer.properties")
        let cold = timed tool ("--print-classpath" :: source)
        let verify = ResizeArray()
        let command = ResizeArray()

        for _ in 1..runs do
            verify.Add(timed tool ("--print-classpath" :: "--offline" :: source))
            command.Add(timed tool ("-p" :: properties :: "--offline" :: source))

        let median (values: ResizeArray<float>) =
            (Seq.sort values |> Array.ofSeq)[values.Count / 2]

        printfn ""

        printfn
            "| kcl-bootstrap, %d jars (%.0f MB, %d classes), the whole process | median s | min s | max s |"
            coordinates.Length
            (float bytes / 1e6)
            (classCount / coordinates.Length * coordinates.Length)

        printfn "|---|---:|---:|---:|"
        printfn "| cold: fetch from a folder, verify, print the classpath (1 run) | %.2f | | |" cold

        for name, values in
            [
                "warm: verify, print the classpath", verify
                "warm: verify, check Java and the jars' class versions, print the command", command
            ] do
            printfn "| %s | %.2f | %.2f | %.2f |" name (median values) (Seq.min values) (Seq.max values)
    finally
        dir.Delete true
