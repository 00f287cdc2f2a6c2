/// The public API of an assembly as sorted text lines, one per type and one per member, through reflection.
/// F# constructs are named as such (module, union, record), so an F# type in a C# signature is visible in review.
module Kcl.Api.Tests.ApiListing

open System
open System.Reflection
open Microsoft.FSharp.Core

let rec typeName (t: Type) : string =
    if t.IsGenericParameter then
        t.Name
    elif t.IsByRef then
        typeName (t.GetElementType()) + "&"
    elif t.IsPointer then
        typeName (t.GetElementType()) + "*"
    elif t.IsArray then
        typeName (t.GetElementType()) + "[" + String(',', t.GetArrayRank() - 1) + "]"
    else
        let baseName =
            if t.IsNested then
                typeName t.DeclaringType + "+" + t.Name
            else
                (if String.IsNullOrEmpty t.Namespace then
                     ""
                 else
                     t.Namespace + ".")
                + t.Name

        let baseName =
            match baseName.IndexOf '`' with
            | -1 -> baseName
            | i -> baseName.Substring(0, i)

        let args =
            if t.IsGenericType then
                let all = t.GetGenericArguments()
                // A nested type repeats its declaring type's arguments first.
                let own =
                    if t.IsNested && t.DeclaringType.IsGenericType then
                        all |> Array.skip (t.DeclaringType.GetGenericArguments().Length)
                    else
                        all

                own
            else
                [||]

        if args.Length = 0 then
            baseName
        else
            baseName + "<" + String.Join(", ", args |> Array.map typeName) + ">"

/// The F# construct a type compiles from, if any.
let fsharpKind (t: Type) =
    match t.GetCustomAttribute<CompilationMappingAttribute>() |> box with
    | null -> None
    | a ->
        let a = a :?> CompilationMappingAttribute

        match a.SourceConstructFlags &&& SourceConstructFlags.KindMask with
        | SourceConstructFlags.Module -> Some "module"
        | SourceConstructFlags.SumType -> Some "union"
        | SourceConstructFlags.RecordType -> Some "record"
        | SourceConstructFlags.ObjectType -> None
        | SourceConstructFlags.Exception -> Some "exception"
        | other -> Some(string other)

let kind (t: Type) =
    match fsharpKind t with
    | Some k -> "fsharp-" + k
    | None ->
        if t.IsInterface then "interface"
        elif t.IsEnum then "enum"
        elif t.IsValueType then "struct"
        elif typeof<Delegate>.IsAssignableFrom t then "delegate"
        elif t.IsAbstract && t.IsSealed then "static class"
        elif t.IsAbstract then "abstract class"
        elif t.IsSealed then "sealed class"
        else "class"

let private parameters (ps: ParameterInfo array) =
    String.Join(
        ", ",
        ps
        |> Array.map (fun p ->
            let prefix =
                if p.IsOut then "out "
                elif p.IsDefined(typeof<ParamArrayAttribute>) then "params "
                else ""

            let optional = if p.IsOptional then " = default" else ""
            sprintf "%s%s: %s%s" prefix p.Name (typeName p.ParameterType) optional)
    )

let private flags =
    BindingFlags.Public
    ||| BindingFlags.Instance
    ||| BindingFlags.Static
    ||| BindingFlags.DeclaredOnly

let private methodModifiers (m: MethodBase) =
    (if m.IsStatic then "static " else "")
    + (if m.IsAbstract then "abstract "
       elif m.IsVirtual && not m.IsFinal then "virtual "
       else "")

/// The members a type declares itself, one line each, sorted.
let members (t: Type) : string list =
    [
        for c in t.GetConstructors(flags) do
            yield sprintf "ctor(%s)" (parameters (c.GetParameters()))

        for m in t.GetMethods(flags) do
            // Names with '@' are the F# compiler's own (inline helpers such as <Bind>__debug@148 exist in Debug
            // builds only), not API: without this the listing would depend on the configuration.
            if (not m.IsSpecialName || m.Name.StartsWith "op_") && not (m.Name.Contains '@') then
                let generics =
                    if m.IsGenericMethodDefinition then
                        "<" + String.Join(", ", m.GetGenericArguments() |> Array.map typeName) + ">"
                    else
                        ""

                yield
                    sprintf
                        "%smethod %s%s(%s): %s"
                        (methodModifiers m)
                        m.Name
                        generics
                        (parameters (m.GetParameters()))
                        (typeName m.ReturnType)

        for p in t.GetProperties(flags) do
            let accessor =
                p.GetMethod |> Option.ofObj |> Option.orElse (Option.ofObj p.SetMethod)

            let modifiers = accessor |> Option.map methodModifiers |> Option.defaultValue ""

            let access =
                (if isNull p.GetMethod || not p.GetMethod.IsPublic then
                     ""
                 else
                     "get; ")
                + (if isNull p.SetMethod || not p.SetMethod.IsPublic then
                       ""
                   else
                       "set; ")

            let index =
                match p.GetIndexParameters() with
                | [||] -> ""
                | ps -> "[" + parameters ps + "]"

            yield sprintf "%sproperty %s%s: %s { %s}" modifiers p.Name index (typeName p.PropertyType) access

        for f in t.GetFields(flags) do
            if not t.IsEnum || f.IsStatic then
                let modifiers =
                    (if f.IsLiteral then "const "
                     elif f.IsStatic then "static "
                     else "")
                    + (if f.IsInitOnly then "readonly " else "")

                yield sprintf "%sfield %s: %s" modifiers f.Name (typeName f.FieldType)

        for e in t.GetEvents(flags) do
            yield sprintf "event %s: %s" e.Name (typeName e.EventHandlerType)
    ]
    |> List.sort

let private header (t: Type) =
    let bases =
        [
            if
                not (isNull t.BaseType)
                && t.BaseType <> typeof<obj>
                && t.BaseType <> typeof<ValueType>
                && t.BaseType <> typeof<Enum>
                && t.BaseType <> typeof<MulticastDelegate>
            then
                yield typeName t.BaseType
            yield! t.GetInterfaces() |> Array.map typeName |> Array.sort
        ]

    sprintf
        "%s %s%s"
        (kind t)
        (typeName t)
        (if bases.IsEmpty then
             ""
         else
             " : " + String.Join(", ", bases))

/// Every exported type of the assembly (nested ones included), sorted by name, each followed by its members.
let listing (assembly: Assembly) : string list =
    [
        for t in assembly.GetExportedTypes() |> Array.sortBy typeName do
            yield header t

            for m in members t do
                yield "  " + m
    ]

/// The types a member's signature mentions, generic arguments included.
let rec private mentioned (t: Type) : Type seq =
    seq {
        if t.HasElementType then
            yield! mentioned (t.GetElementType())
        elif t.IsGenericParameter then
            ()
        else
            yield t

            if t.IsGenericType then
                for a in t.GetGenericArguments() do
                    yield! mentioned a
    }

/// Each public signature of a type that mentions an F#-only type (from FSharp.Core, or an F# module, union or
/// record from any assembly), as "Type.Member: F# type".
let fsharpMentions (t: Type) : string list =
    let isFSharp (x: Type) =
        x.Assembly = typeof<unit>.Assembly
        || (x.IsGenericType && x.GetGenericTypeDefinition().Assembly = typeof<unit>.Assembly)
        || (fsharpKind x).IsSome

    let check (where: string) (types: Type seq) =
        types
        |> Seq.collect mentioned
        |> Seq.filter isFSharp
        |> Seq.map (fun x -> sprintf "%s.%s: %s" (typeName t) where (typeName x))

    [
        yield! check "(type)" [ t ]

        if not (isNull t.BaseType) then
            yield! check "(base)" [ t.BaseType ]

        for i in t.GetInterfaces() do
            yield! check "(interface)" [ i ]

        for c in t.GetConstructors(flags) do
            yield! check ".ctor" (c.GetParameters() |> Seq.map (fun p -> p.ParameterType))

        for m in t.GetMethods(flags) do
            yield! check m.Name (Seq.append [ m.ReturnType ] (m.GetParameters() |> Seq.map (fun p -> p.ParameterType)))

        for p in t.GetProperties(flags) do
            yield! check p.Name [ p.PropertyType ]

        for f in t.GetFields(flags) do
            yield! check f.Name [ f.FieldType ]

        for e in t.GetEvents(flags) do
            yield! check e.Name [ e.EventHandlerType ]
    ]
    |> List.distinct
