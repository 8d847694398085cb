"""Viewport/render display of imported Gaussians: coloured points, the splat look, surface material.

A mesh made only of vertices is invisible in Object Mode, so every imported object gets a Geometry
Nodes modifier that turns its vertices into a point cloud (radius from the ``_scale`` attribute times
a user factor) with a material that shows each point's colour and opacity. The modifier is display
only: the glTF/FBX exporters skip unapplied modifiers, so exported files carry the raw vertices,
shape keys and attributes. The node group and the material are shared by all results and reused.
"""

from __future__ import annotations

import bpy

from ..core.splat_overlap import SPLAT_EXTENT

NODE_GROUP_NAME = "GenMOJO Points"
MATERIAL_NAME = "GenMOJO Points"
MODIFIER_NAME = "GenMOJO Points"
COLOR_ATTRIBUTE = "Color"
OPACITY_ATTRIBUTE = "_opacity"
SCALE_ATTRIBUTE = "_scale"
RADIUS_SOCKET = "Radius Factor"
SIGMA_ATTRIBUTE = "splat_sigma"  # FLOAT_VECTOR: the three standard deviations of a Gaussian
ROTATION_ATTRIBUTE = "splat_rotation"  # QUATERNION: its orientation
# Neither name starts with "_", so glTF exports skip them: Blender's glTF importer (5.0) fails on
# vector-valued custom attributes.

SPLATS_NAME = "GenMOJO Splats"  # node group, material and modifier of the splat look
SIZE_SOCKET = "Size Factor"
DETAIL_SOCKET = "Detail"
# Each splat is an ellipsoid with semi-axes SPLAT_EXTENT standard deviations; the material fades
# it with the Gaussian's projected profile, so at the ellipsoid's silhouette it has faded to
# exp(-SPLAT_EXTENT^2 / 2) (4 % at 2.5) of its peak opacity.
# (core/splat_overlap.py holds the value: the Cycles bounce estimate uses the same ellipsoids)
SURFACE_MATERIAL_NAME = "GenMOJO Surface"


def points_material() -> bpy.types.Material:
    """Emission coloured by the ``Color`` attribute, mixed with transparency by ``_opacity``."""
    mat = bpy.data.materials.get(MATERIAL_NAME)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(MATERIAL_NAME)
    mat.use_nodes = True
    mat.surface_render_method = "DITHERED"
    nt = mat.node_tree
    nt.nodes.clear()
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    col = nt.nodes.new("ShaderNodeAttribute")
    col.attribute_type = "GEOMETRY"
    col.attribute_name = COLOR_ATTRIBUTE
    opa = nt.nodes.new("ShaderNodeAttribute")
    opa.attribute_type = "GEOMETRY"
    opa.attribute_name = OPACITY_ATTRIBUTE
    emit = nt.nodes.new("ShaderNodeEmission")
    clear = nt.nodes.new("ShaderNodeBsdfTransparent")
    mix = nt.nodes.new("ShaderNodeMixShader")
    nt.links.new(col.outputs["Color"], emit.inputs["Color"])
    nt.links.new(opa.outputs["Fac"], mix.inputs["Fac"])
    nt.links.new(clear.outputs["BSDF"], mix.inputs[1])
    nt.links.new(emit.outputs["Emission"], mix.inputs[2])
    nt.links.new(mix.outputs["Shader"], out.inputs["Surface"])
    for i, node in enumerate((col, opa, emit, clear, mix, out)):
        node.location = (200 * (i // 2), -200 * (i % 2))
    return mat


def points_node_group() -> bpy.types.NodeTree:
    """Mesh to Points with radius = ``_scale`` x factor, then the shared points material."""
    ng = bpy.data.node_groups.get(NODE_GROUP_NAME)
    if ng is not None and ng.bl_idname == "GeometryNodeTree":
        return ng
    ng = bpy.data.node_groups.new(NODE_GROUP_NAME, "GeometryNodeTree")
    ng.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    factor = ng.interface.new_socket(RADIUS_SOCKET, in_out="INPUT", socket_type="NodeSocketFloat")
    factor.default_value = 1.0
    factor.min_value = 0.0
    ng.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    n = ng.nodes
    gin, gout = n.new("NodeGroupInput"), n.new("NodeGroupOutput")
    scale = n.new("GeometryNodeInputNamedAttribute")
    scale.data_type = "FLOAT"
    scale.inputs["Name"].default_value = SCALE_ATTRIBUTE
    mul = n.new("ShaderNodeMath")
    mul.operation = "MULTIPLY"
    to_points = n.new("GeometryNodeMeshToPoints")
    set_mat = n.new("GeometryNodeSetMaterial")
    set_mat.inputs["Material"].default_value = points_material()
    L = ng.links
    L.new(scale.outputs["Attribute"], mul.inputs[0])
    L.new(gin.outputs[RADIUS_SOCKET], mul.inputs[1])
    L.new(gin.outputs["Geometry"], to_points.inputs["Mesh"])
    L.new(mul.outputs["Value"], to_points.inputs["Radius"])
    L.new(to_points.outputs["Points"], set_mat.inputs["Geometry"])
    L.new(set_mat.outputs["Geometry"], gout.inputs["Geometry"])
    for i, node in enumerate((gin, scale, mul, to_points, set_mat, gout)):
        node.location = (180 * i, 0)
    return ng


def add_points_display(obj: bpy.types.Object) -> bpy.types.Modifier:
    """Attach the shared point-display modifier to a vertex-only mesh object."""
    mod = obj.modifiers.new(MODIFIER_NAME, "NODES")
    mod.node_group = points_node_group()
    return mod


def _link_chain(nt, pairs):
    for a, b in pairs:
        nt.links.new(a, b)


def splats_material() -> bpy.types.Material:
    """Emission coloured by ``Color``; alpha is the Gaussian's opacity times its projected profile.

    On an ellipsoid that spans ``SPLAT_EXTENT`` standard deviations, a camera ray that meets the
    front surface where the (smooth) normal makes cosine c with the ray passes the Gaussian's
    centre at ``SPLAT_EXTENT * sqrt(1 - c^2)`` standard deviations, so the Gaussian's footprint
    there is ``exp(-SPLAT_EXTENT^2 (1 - c^2) / 2)``. Back faces are fully transparent, so each
    splat counts once. Works in EEVEE (dithered transparency) and Cycles alike.
    """
    mat = bpy.data.materials.get(SPLATS_NAME)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(SPLATS_NAME)
    mat.use_nodes = True
    mat.surface_render_method = "DITHERED"
    mat.use_backface_culling = True
    nt = mat.node_tree
    nt.nodes.clear()
    n = nt.nodes
    out = n.new("ShaderNodeOutputMaterial")
    col = n.new("ShaderNodeAttribute")
    col.attribute_type, col.attribute_name = "GEOMETRY", COLOR_ATTRIBUTE
    opa = n.new("ShaderNodeAttribute")
    opa.attribute_type, opa.attribute_name = "GEOMETRY", OPACITY_ATTRIBUTE
    geo = n.new("ShaderNodeNewGeometry")
    dot = n.new("ShaderNodeVectorMath")
    dot.operation = "DOT_PRODUCT"
    sq = n.new("ShaderNodeMath")
    sq.operation = "MULTIPLY"
    one_minus = n.new("ShaderNodeMath")
    one_minus.operation = "SUBTRACT"
    one_minus.inputs[0].default_value = 1.0
    scale = n.new("ShaderNodeMath")
    scale.operation = "MULTIPLY"
    scale.inputs[1].default_value = -0.5 * SPLAT_EXTENT ** 2
    expo = n.new("ShaderNodeMath")
    expo.operation = "EXPONENT"
    alpha = n.new("ShaderNodeMath")
    alpha.operation = "MULTIPLY"
    alpha.use_clamp = True
    front = n.new("ShaderNodeMath")
    front.operation = "SUBTRACT"
    front.inputs[0].default_value = 1.0
    masked = n.new("ShaderNodeMath")
    masked.operation = "MULTIPLY"
    emit = n.new("ShaderNodeEmission")
    clear = n.new("ShaderNodeBsdfTransparent")
    mix = n.new("ShaderNodeMixShader")
    _link_chain(nt, [
        (geo.outputs["Normal"], dot.inputs[0]), (geo.outputs["Incoming"], dot.inputs[1]),
        (dot.outputs["Value"], sq.inputs[0]), (dot.outputs["Value"], sq.inputs[1]),
        (sq.outputs["Value"], one_minus.inputs[1]), (one_minus.outputs["Value"], scale.inputs[0]),
        (scale.outputs["Value"], expo.inputs[0]), (expo.outputs["Value"], alpha.inputs[0]),
        (opa.outputs["Fac"], alpha.inputs[1]), (geo.outputs["Backfacing"], front.inputs[1]),
        (alpha.outputs["Value"], masked.inputs[0]), (front.outputs["Value"], masked.inputs[1]),
        (col.outputs["Color"], emit.inputs["Color"]), (masked.outputs["Value"], mix.inputs["Fac"]),
        (clear.outputs["BSDF"], mix.inputs[1]), (emit.outputs["Emission"], mix.inputs[2]),
        (mix.outputs["Shader"], out.inputs["Surface"]),
    ])
    for i, node in enumerate((geo, opa, col, dot, sq, one_minus, scale, expo, alpha, front, masked,
                              emit, clear, mix, out)):
        node.location = (180 * (i // 3), -180 * (i % 3))
    return mat


def splats_node_group() -> bpy.types.NodeTree:
    """An ellipsoid per vertex: an ico-sphere rotated by ``_rotation`` and scaled by ``_sigma`` x
    ``SPLAT_EXTENT`` x Size Factor, realised (so the shader reads the per-point attributes as
    plain geometry attributes), smooth-shaded, with the splats material."""
    ng = bpy.data.node_groups.get(SPLATS_NAME)
    if ng is not None and ng.bl_idname == "GeometryNodeTree":
        return ng
    ng = bpy.data.node_groups.new(SPLATS_NAME, "GeometryNodeTree")
    ng.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    size = ng.interface.new_socket(SIZE_SOCKET, in_out="INPUT", socket_type="NodeSocketFloat")
    size.default_value, size.min_value = 1.0, 0.0
    detail = ng.interface.new_socket(DETAIL_SOCKET, in_out="INPUT", socket_type="NodeSocketInt")
    detail.default_value, detail.min_value, detail.max_value = 2, 1, 5
    ng.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    n = ng.nodes
    gin, gout = n.new("NodeGroupInput"), n.new("NodeGroupOutput")
    ico = n.new("GeometryNodeMeshIcoSphere")
    ico.inputs["Radius"].default_value = 1.0
    sigma = n.new("GeometryNodeInputNamedAttribute")
    sigma.data_type = "FLOAT_VECTOR"
    sigma.inputs["Name"].default_value = SIGMA_ATTRIBUTE
    rot = n.new("GeometryNodeInputNamedAttribute")
    rot.data_type = "QUATERNION"
    rot.inputs["Name"].default_value = ROTATION_ATTRIBUTE
    factor = n.new("ShaderNodeMath")
    factor.operation = "MULTIPLY"
    factor.inputs[1].default_value = SPLAT_EXTENT
    scale = n.new("ShaderNodeVectorMath")
    scale.operation = "SCALE"
    inst = n.new("GeometryNodeInstanceOnPoints")
    realize = n.new("GeometryNodeRealizeInstances")
    smooth = n.new("GeometryNodeSetShadeSmooth")
    set_mat = n.new("GeometryNodeSetMaterial")
    set_mat.inputs["Material"].default_value = splats_material()
    _link_chain(ng, [
        (gin.outputs[DETAIL_SOCKET], ico.inputs["Subdivisions"]),
        (gin.outputs[SIZE_SOCKET], factor.inputs[0]),
        (sigma.outputs["Attribute"], scale.inputs[0]), (factor.outputs["Value"], scale.inputs["Scale"]),
        (gin.outputs["Geometry"], inst.inputs["Points"]), (ico.outputs["Mesh"], inst.inputs["Instance"]),
        (rot.outputs["Attribute"], inst.inputs["Rotation"]), (scale.outputs["Vector"], inst.inputs["Scale"]),
        (inst.outputs["Instances"], realize.inputs["Geometry"]),
        (realize.outputs["Geometry"], smooth.inputs["Geometry"]),
        (smooth.outputs["Geometry"], set_mat.inputs["Geometry"]),
        (set_mat.outputs["Geometry"], gout.inputs["Geometry"]),
    ])
    for i, node in enumerate((gin, sigma, rot, factor, scale, ico, inst, realize, smooth, set_mat, gout)):
        node.location = (170 * i, -120 * (i % 2))
    return ng


def add_splats_display(obj: bpy.types.Object) -> bpy.types.Modifier:
    """Attach the shared splat-look modifier to a vertex-per-Gaussian mesh object."""
    mod = obj.modifiers.new(SPLATS_NAME, "NODES")
    mod.node_group = splats_node_group()
    return mod


def surface_material() -> bpy.types.Material:
    """A matte material coloured by the surface's ``Color`` attribute (from nearby Gaussians)."""
    mat = bpy.data.materials.get(SURFACE_MATERIAL_NAME)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(SURFACE_MATERIAL_NAME)
    mat.use_nodes = True
    nt = mat.node_tree
    bsdf = next((nd for nd in nt.nodes if nd.bl_idname == "ShaderNodeBsdfPrincipled"), None)
    if bsdf is None:
        bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
        out = next(nd for nd in nt.nodes if nd.bl_idname == "ShaderNodeOutputMaterial")
        nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    col = nt.nodes.new("ShaderNodeAttribute")
    col.attribute_type, col.attribute_name = "GEOMETRY", COLOR_ATTRIBUTE
    col.location = (bsdf.location.x - 250, bsdf.location.y)
    nt.links.new(col.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.8
    return mat
