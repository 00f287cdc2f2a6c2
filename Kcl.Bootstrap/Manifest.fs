(*
    Manifest --- the daemon's jars as Maven coordinates, pure.

    A manifest is a flat, ordered list: no transitive resolution is ever done. The classpath is built from it in
    its order, so a cache folder holding stale jars of another version cannot leak into a launch.
*)
namespace Kcl.Bootstrap

open System
open System.IO
open System.Reflection
open System.Xml.Linq

/// One Maven artifact: group, artifact and version.
type Coordinate =
    {
        /// The group id, e.g. "software.amazon.kinesis".
        Group: string
        /// The artifact id, e.g. "amazon-kinesis-client-multilang".
        Artifact: string
        /// The version, e.g. "3.1.3".
        Version: string
    }

    /// group:artifact:version, as Maven writes it.
    override this.ToString() =
        sprintf "%s:%s:%s" this.Group this.Artifact this.Version

/// A digest of a jar's bytes, as lower-case hex.
[<RequireQualifiedAccess>]
type Digest =
    /// SHA-1, the checksum every Maven Central artifact publishes (`.sha1`).
    | Sha1 of hex: string
    /// SHA-256, published by some repositories (`.sha256`) and preferred where present.
    | Sha256 of hex: string

    /// The algorithm's name, as used in checksum file extensions: "sha1" or "sha256".
    member this.Algorithm =
        match this with
        | Sha1 _ -> "sha1"
        | Sha256 _ -> "sha256"

    /// The lower-case hex digest.
    member this.Hex =
        match this with
        | Sha1 hex
        | Sha256 hex -> hex

    /// "sha1:<hex>" or "sha256:<hex>", the form a manifest pins it in.
    override this.ToString() = this.Algorithm + ":" + this.Hex

/// One jar of a manifest, with an optional pinned digest that is trusted over the repository's checksum files.
type ManifestEntry =
    {
        /// The jar's coordinate.
        Coordinate: Coordinate
        /// A digest pinned in the manifest; when present the repository's checksum files are not consulted.
        Pinned: Digest option
    }

/// The jars of one KCL release, in classpath order.
type Manifest =
    {
        /// The KCL version, which names the cache's subfolder, e.g. "3.1.3".
        KclVersion: string
        /// The jars, in classpath order.
        Entries: ManifestEntry list
    }

/// Coordinates to repository paths and file names.
[<RequireQualifiedAccess>]
module Coordinate =
    let private isValidPart (s: string) =
        s.Length > 0
        && s
           |> Seq.forall (fun c -> Char.IsLetterOrDigit c || c = '.' || c = '-' || c = '_' || c = '+')

    /// Parses "group:artifact:version"; a fourth part (a classifier or packaging) is refused, since every jar the
    /// daemon needs is a plain jar.
    let parse (text: string) : Result<Coordinate, string> =
        match text.Trim().Split ':' with
        | [| g; a; v |] when isValidPart g && isValidPart a && isValidPart v ->
            Ok { Group = g; Artifact = a; Version = v }
        | _ -> Error(sprintf "'%s' is not a Maven coordinate of the form group:artifact:version" (text.Trim()))

    /// The jar's file name: artifact-version.jar.
    let fileName (c: Coordinate) =
        sprintf "%s-%s.jar" c.Artifact c.Version

    /// The jar's path inside a Maven-layout repository, with '/' separators: group dots become folders.
    let repositoryPath (c: Coordinate) =
        String.Join("/", [ c.Group.Replace('.', '/'); c.Artifact; c.Version; fileName c ])

    /// The jar's URL under a repository base URL (a trailing slash on the base is optional).
    let url (repository: Uri) (c: Coordinate) =
        let baseText = repository.AbsoluteUri
        let baseText = if baseText.EndsWith "/" then baseText else baseText + "/"
        Uri(Uri baseText, repositoryPath c)

/// Reading manifests: the shipped releases, flat lists and flattened pom.xml files.
[<RequireQualifiedAccess>]
module Manifest =
    /// The release used when none is named.
    [<Literal>]
    let DefaultKclVersion = "3.1.3"

    /// The artifact whose version is the KCL release.
    [<Literal>]
    let MultiLangArtifact = "amazon-kinesis-client-multilang"

    /// The releases whose manifests ship inside this library, newest first.
    let releases = [ "3.1.3"; "2.7.2" ]

    let private parseDigest (token: string) =
        let isHex length (s: string) =
            s.Length = length && s |> Seq.forall Uri.IsHexDigit

        match token.Split(':', 2) with
        | [| "sha1"; hex |] when isHex 40 hex -> Ok(Digest.Sha1(hex.ToLowerInvariant()))
        | [| "sha256"; hex |] when isHex 64 hex -> Ok(Digest.Sha256(hex.ToLowerInvariant()))
        | _ -> Error(sprintf "'%s' is not a pinned digest (sha1:<40 hex> or sha256:<64 hex>)" token)

    /// The KCL version a manifest's jars imply: the multilang artifact's version, or "custom" without one.
    let kclVersionOf (entries: ManifestEntry list) =
        entries
        |> List.tryFind (fun e -> e.Coordinate.Artifact = MultiLangArtifact)
        |> Option.map (fun e -> e.Coordinate.Version)
        |> Option.defaultValue "custom"

    let private build (entries: ManifestEntry list) : Result<Manifest, string> =
        let duplicates =
            entries
            |> List.countBy (fun e -> e.Coordinate.Group, e.Coordinate.Artifact)
            |> List.filter (fun (_, n) -> n > 1)

        match entries, duplicates with
        | [], _ -> Error "the manifest lists no jar"
        | _, ((g, a), _) :: _ -> Error(sprintf "the manifest lists %s:%s more than once" g a)
        | _ ->
            Ok
                {
                    KclVersion = kclVersionOf entries
                    Entries = entries
                }

    /// Parses a flat list: one "group:artifact:version" per line, optionally followed by a pinned digest
    /// ("sha1:<hex>" or "sha256:<hex>"); blank lines and lines starting with '#' are skipped.
    let parseLines (text: string) : Result<Manifest, string> =
        let parsed =
            text.Split('\n')
            |> Array.mapi (fun i line -> i + 1, line.Trim())
            |> Array.filter (fun (_, line) -> line <> "" && not (line.StartsWith "#"))
            |> Array.map (fun (number, line) ->
                let fail message =
                    Error(sprintf "line %d: %s" number message)

                match line.Split([| ' '; '\t' |], StringSplitOptions.RemoveEmptyEntries) with
                | [| coordinate |] ->
                    match Coordinate.parse coordinate with
                    | Ok c -> Ok { Coordinate = c; Pinned = None }
                    | Error e -> fail e
                | [| coordinate; digest |] ->
                    match Coordinate.parse coordinate, parseDigest digest with
                    | Ok c, Ok d -> Ok { Coordinate = c; Pinned = Some d }
                    | Error e, _
                    | _, Error e -> fail e
                | _ -> fail (sprintf "expected 'group:artifact:version [sha1:<hex>|sha256:<hex>]', found '%s'" line))

        match
            parsed
            |> Array.tryPick (function
                | Error e -> Some e
                | Ok _ -> None)
        with
        | Some e -> Error e
        | None -> parsed |> Array.choose Result.toOption |> List.ofArray |> build

    /// Parses a flattened pom.xml, as the Node and Python bindings ship: every jar listed as a dependency, versions
    /// literal or "${property}" from the pom's properties. Dependencies scoped test, provided or system are left
    /// out; nothing is resolved transitively.
    let parsePom (text: string) : Result<Manifest, string> =
        try
            let doc = XDocument.Parse text

            let named (name: string) (e: XElement) =
                e.Elements() |> Seq.filter (fun c -> c.Name.LocalName = name)

            let value name (e: XElement) =
                named name e |> Seq.tryHead |> Option.map (fun c -> c.Value.Trim())

            let project = doc.Root

            let properties =
                named "properties" project
                |> Seq.collect (fun p -> p.Elements())
                |> Seq.map (fun p -> p.Name.LocalName, p.Value.Trim())
                |> Map.ofSeq

            let substitute (s: string) =
                if s.StartsWith "${" && s.EndsWith "}" then
                    let name = s.Substring(2, s.Length - 3)

                    match properties.TryFind name with
                    | Some v -> Ok v
                    | None -> Error(sprintf "the pom uses ${%s}, which its <properties> do not define" name)
                else
                    Ok s

            let dependencies =
                named "dependencies" project
                |> Seq.collect (named "dependency")
                |> Seq.filter (fun d ->
                    match value "scope" d with
                    | Some("test" | "provided" | "system") -> false
                    | _ -> true)
                |> List.ofSeq

            let entry (d: XElement) =
                match value "groupId" d, value "artifactId" d, value "version" d with
                | Some g, Some a, Some v ->
                    match substitute g, substitute a, substitute v with
                    | Ok g, Ok a, Ok v ->
                        Coordinate.parse (sprintf "%s:%s:%s" g a v)
                        |> Result.map (fun c -> { Coordinate = c; Pinned = None })
                    | Error e, _, _
                    | _, Error e, _
                    | _, _, Error e -> Error e
                | _ -> Error "a <dependency> lacks a groupId, artifactId or version"

            let entries = dependencies |> List.map entry

            match
                entries
                |> List.tryPick (function
                    | Error e -> Some e
                    | Ok _ -> None)
            with
            | Some e -> Error("pom.xml: " + e)
            | None -> entries |> List.choose Result.toOption |> build
        with :? Xml.XmlException as e ->
            Error("pom.xml is not well-formed XML: " + e.Message)

    /// Parses either form, telling them apart by a leading '<'.
    let parse (text: string) : Result<Manifest, string> =
        if text.TrimStart().StartsWith "<" then
            parsePom text
        else
            parseLines text

    /// The manifest of a release that ships with this library.
    let release (kclVersion: string) : Result<Manifest, string> =
        if List.contains kclVersion releases then
            let name = sprintf "Kcl.Bootstrap.releases.%s.txt" kclVersion
            use stream = Assembly.GetExecutingAssembly().GetManifestResourceStream name
            use reader = new StreamReader(stream)
            parseLines (reader.ReadToEnd())
        else
            Error(
                sprintf
                    "KCL %s has no shipped manifest; shipped: %s (or pass --manifest FILE)"
                    kclVersion
                    (String.Join(", ", releases))
            )

    /// The daemon's main class for a KCL version: KCL 2.1 moved it from com.amazonaws to software.amazon.
    let mainClass (kclVersion: string) =
        if kclVersion.StartsWith "1." || kclVersion.StartsWith "2.0." then
            "com.amazonaws.services.kinesis.multilang.MultiLangDaemon"
        else
            "software.amazon.kinesis.multilang.MultiLangDaemon"

    /// Whether the daemon of this version takes --properties-file (2.1 and later) or a positional file.
    let takesPropertiesOption (kclVersion: string) =
        mainClass kclVersion = "software.amazon.kinesis.multilang.MultiLangDaemon"
